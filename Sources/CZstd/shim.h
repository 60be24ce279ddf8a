#ifndef ROWFLOW_CZSTD_SHIM_H
#define ROWFLOW_CZSTD_SHIM_H
#include <zstd.h>
#include <zstd_errors.h>
#endif

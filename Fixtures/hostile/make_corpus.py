#!/usr/bin/env python3
"""Writes the hostile-input corpus (run once; the files are committed). Each case is a line of cases.tsv:
file, manifest, expected exit code, a fragment the error message must contain ('' for exit 0), and what
it probes. `rowflow` must answer each with that code and a one-line message naming the place, within
bounded memory and without a crash or signal."""
import os, struct, subprocess, random

os.chdir(os.path.dirname(os.path.abspath(__file__)))
cases = []
def w(name, data):
    with open(name, "wb") as f: f.write(data)
def case(name, manifest, code, fragment, why):
    cases.append((name, manifest, str(code), fragment, why))
def zst(data, *args):
    return subprocess.run(["zstd", "-q", "-c", *args], input=data, capture_output=True, check=True).stdout

rows = "".join(f"{i},{i*0.5},{-i}\n" for i in range(2000)).encode()
w("plain.csv", rows)
case("plain.csv", "csv3.yaml", 0, "", "the reference for the accepted variants")
w("crlf.csv", rows.replace(b"\n", b"\r\n"))
case("crlf.csv", "csv3.yaml", 0, "", "CRLF line ends: same result as LF")
w("bom.csv", b"\xef\xbb\xbf" + rows)
case("bom.csv", "csv3.yaml", 0, "", "UTF-8 BOM: same result as LF")
w("quoted.csv", b"".join(b",".join(b'"' + f + b'"' for f in line.split(b",")) + b"\n" for line in rows.splitlines()))
case("quoted.csv", "csv3.yaml", 0, "", "quoted numbers: same result as LF")
w("header.csv", b"a,b,c\n" + rows)
case("header.csv", "csv3.yaml", 0, "", "a header line (auto-detected): same result")

z = zst(rows)
w("truncated.csv.zst", z[: len(z) // 2])
case("truncated.csv.zst", "csv3.yaml", 65, "truncated zstd", "zstd stream cut in half")
bad = bytearray(zst(rows, "--check"))
bad[len(bad) // 2] ^= 0xFF
w("corrupt.csv.zst", bytes(bad))
case("corrupt.csv.zst", "csv3.yaml", 65, "corrupt zstd data", "a flipped byte inside a zstd frame")
w("bad-magic.zst", b"\x28\xb5\x2f\xfe" + z[4:])
case("bad-magic.zst", "auto.yaml", 65, "binary data", "almost the zstd magic: treated as (binary) text")
bomb = subprocess.run("head -c 4G /dev/zero | tr '\\0' '\\377' | zstd -q -3 -c", shell=True, capture_output=True, check=True).stdout
w("bomb.zst", bomb)
case("bomb.zst", "auto.yaml", 65, "binary data", "zstd bomb: a few hundred KB expanding to 4 GiB of 0xFF, sniffed as binary")
case("bomb.zst", "csv3.yaml", 65, "line is longer than", "zstd bomb read as csv: one endless line, rejected after the line limit")
case("bomb.zst", "f32.yaml", 65, "row 1: non-finite", "zstd bomb read as f32: NaN rows")
w("long-window.zst", zst(rows * 40, "--long=31", "--ultra", "-22"))
case("long-window.zst", "csv3.yaml", 65, "corrupt zstd data", "a frame asking for a 2 GiB window: refused by the decoder's memory limit")
random.seed(7)
w("garbage.bin", bytes(random.getrandbits(8) for _ in range(100_000)))
case("garbage.bin", "auto.yaml", 65, "binary data", "random binary garbage")
w("long-line.csv.zst", zst(b"1," * (5 << 20) + b"1\n"))
case("long-line.csv.zst", "csv3.yaml", 65, "line is longer than 1048768 bytes", "a 10 MB line (zstd-compressed to stay small in git)")
w("long-token.csv.zst", zst(b"9" * (10 << 20) + b"\n"))
case("long-token.csv.zst", "auto.yaml", 65, "line is longer than", "a 10 MB line without delimiters")
w("ragged.csv", b"1,2,3\n4,5\n")
case("ragged.csv", "csv3.yaml", 65, "ragged.csv:2:1: ragged row", "a row with too few fields")
w("nan.csv", b"1,2,3\n4,nan,6\n")
case("nan.csv", "csv3.yaml", 65, "nan.csv:2:3: bad value: non-finite", "NaN")
w("inf.csv", b"1,2,3\n4,5,-inf\n")
case("inf.csv", "csv3.yaml", 65, "inf.csv:2:5: bad value: non-finite", "-Inf")
w("overflow.csv", b"1,2,3\n4,5,1e999\n")
case("overflow.csv", "csv3.yaml", 65, "overflow.csv:2:5: bad value: '1e999' overflows", "1e999")
w("word.csv", b"1,2,3\n4,five,6\n")
case("word.csv", "csv3.yaml", 65, "word.csv:2:3: bad value: expected a number", "a word in a numeric column")
w("empty-field.csv", b"1,,3\n")
case("empty-field.csv", "csv3.yaml", 65, "empty-field.csv:1:3: bad value: empty field", "an empty field")
w("empty.csv", b"")
case("empty.csv", "csv3.yaml", 65, "no rows", "empty input")
w("blank-lines.csv", b"\n\n  \n")
case("blank-lines.csv", "csv3.yaml", 65, "no rows", "only blank lines")
w("empty.zst", zst(b""))
case("empty.zst", "csv3.yaml", 65, "no rows", "an empty zstd frame")
w("utf16.csv", "1,2,3\n4,5,6\n".encode("utf-16"))
case("utf16.csv", "auto.yaml", 65, "UTF-16", "UTF-16 text with a BOM")
w("utf16-nobom.csv", "1,2,3\n4,5,6\n".encode("utf-16-le"))
case("utf16-nobom.csv", "csv3.yaml", 65, "NUL bytes", "UTF-16 text without a BOM")
w("latin1.csv", b"1,2,3\n4,\xe9,6\n")
case("latin1.csv", "csv3.yaml", 65, "latin1.csv:2:3: bad value", "a non-UTF-8 byte in a field")
def npy(descr, fortran, shape, payload=b""):
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)
    d += " " * ((64 - (10 + len(d) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode() + payload
w("huge-shape.npy", npy("<f8", "False", "(4611686018427387904, 3)", b"\0" * 48))
case("huge-shape.npy", "auto.yaml", 65, "implausibly large", "a shape of 2^62 rows in the header")
w("short-data.npy", npy("<f8", "False", "(1000, 3)", b"\0" * 48))
case("short-data.npy", "auto.yaml", 65, "npy header promises", "a header promising more rows than the file holds")
w("big-endian.npy", npy(">f8", "False", "(2, 3)", b"\0" * 48))
case("big-endian.npy", "auto.yaml", 65, "big-endian", "big-endian dtype")
w("fortran.npy", npy("<f8", "True", "(2, 3)", b"\0" * 48))
case("fortran.npy", "auto.yaml", 65, "Fortran-order", "Fortran order")
w("complex.npy", npy("<c16", "False", "(2, 3)", b"\0" * 96))
case("complex.npy", "auto.yaml", 65, "unsupported npy dtype", "complex dtype")
w("bad-header.npy", b"\x93NUMPY\x01\x00\x40\x00" + b"{'descr': garbage" + b" " * 47)
case("bad-header.npy", "auto.yaml", 65, "bad npy header", "an unparseable header dict")
w("3d.npy", npy("<f8", "False", "(2, 3, 4)", b"\0" * 192))
case("3d.npy", "auto.yaml", 65, "3 dimensions", "a 3-D array")
w("svm-zero.svm", b"1 1:2 3:4\n0 0:1\n")
case("svm-zero.svm", "svm3.yaml", 65, "svm-zero.svm:2:3: feature index 0", "libsvm index 0")
w("svm-range.svm", b"1 1:2 9:4\n")
case("svm-range.svm", "svm3.yaml", 65, "svm-range.svm:1:7: feature index 9 is out of range", "libsvm index beyond columns")
w("svm-order.svm", b"1 3:2 1:4\n")
case("svm-order.svm", "svm3.yaml", 65, "indices must increase", "libsvm indices out of order")
w("f32-partial.f32", struct.pack("<7f", *range(7)))
case("f32-partial.f32", "f32.yaml", 65, "byte 24: truncated row", "raw f32 with a partial last row")
w("neg-weight.csv", b"1,2,1\n3,4,-1\n")
case("neg-weight.csv", "weighted.yaml", 65, "neg-weight.csv:2:5: bad weight", "a negative weight")
case("plain.csv/x.csv", "csv3.yaml", 66, "cannot open input", "an input path through a regular file (unreadable)")
case("missing.csv", "csv3.yaml", 66, "missing.csv: cannot open input", "a missing file")
# Manifests that must be rejected before any data is read.
for name, code, frag, why in [
    ("cycle.yaml", 64, "emits no rows", "operators reading each other (a cycle through non-samplers)"),
    ("duplicate-id.yaml", 64, "duplicate operator id", "two operators with one id"),
    ("reserved-id.yaml", 64, "is reserved", "an id that names an engine folder"),
    ("wrong-type.yaml", 64, "expected a number", "a string where a number goes"),
    ("anchor-bomb.yaml", 64, "more than 100000 YAML nodes", "a billion-laughs alias bomb"),
    ("unknown-key.yaml", 64, "did you mean 'columns'", "a misspelt source key"),
    ("not-yaml.yaml", 64, "invalid YAML", "unbalanced brackets"),
    ("binary.yaml", 64, "not UTF-8", "binary bytes as a manifest"),
]:
    case("plain.csv", name, code, frag, why)

M = {
    "csv3.yaml": "version: 1\nsource: { format: csv, columns: 3 }\noperators:\n  - { id: m, op: moments }\n  - { id: g, op: gram }\n",
    "auto.yaml": "version: 1\noperators:\n  - { id: m, op: moments }\n",
    "f32.yaml": "version: 1\nsource: { format: f32, columns: 2 }\noperators:\n  - { id: m, op: moments }\n",
    "svm3.yaml": "version: 1\nsource: { format: libsvm, columns: 3 }\noperators:\n  - { id: g, op: gram, params: { solve: ridge, lambda: 1 } }\n",
    "weighted.yaml": "version: 1\nsource: { format: csv, weight: 2 }\noperators:\n  - { id: m, op: moments }\n",
    "cycle.yaml": "version: 1\noperators:\n  - { id: a, op: gram, input: b }\n  - { id: b, op: moments, input: a }\n",
    "duplicate-id.yaml": "version: 1\noperators:\n  - { id: a, op: gram }\n  - { id: a, op: moments }\n",
    "reserved-id.yaml": "version: 1\noperators:\n  - { id: checkpoints, op: gram }\n",
    "wrong-type.yaml": "version: 1\nsource: { target: last }\noperators:\n  - { id: g, op: gram, params: { solve: ridge, lambda: \"big\" } }\n",
    "anchor-bomb.yaml": "version: 1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        "a%d: &a%d [%s]\n" % (i, i, ", ".join(["*a%d" % (i - 1)] * 10)) for i in range(1, 10)) + "operators:\n  - { id: m, op: moments }\n",
    "unknown-key.yaml": "version: 1\nsource: { colums: 3 }\noperators:\n  - { id: m, op: moments }\n",
    "not-yaml.yaml": "version: 1\noperators: [{ id: m, op: moments }\n",
}
for k, v in M.items():
    with open("manifests/" + k, "w") as f: f.write(v)
w("manifests/binary.yaml", b"\xff\xfe\x00\x01garbage\x00")
with open("cases.tsv", "w") as f:
    f.write("# input\tmanifest\texit\tmessage fragment\twhat it probes\n")
    for c in cases: f.write("\t".join(c) + "\n")
print(len(cases), "cases")

print("rowflow")

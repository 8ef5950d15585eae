"""Reading data files, shared by every stage: rows of JSONL/JSON/parquet/CSV files and hub
datasets (`readers`), pairs, texts and prompts taken from them (`sets`), prompt sets for
alignment and evaluation (`prompts`), and the preference records a data format reads into
(`preference`, whose `PreferenceFormat` third-party formats subclass)."""

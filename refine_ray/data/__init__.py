"""Ray Data pipelines and the Parquet sample schema (Ray lives here, the science does not)."""

"""Everything that runs inside AWS Lambda: this folder is the functions' asset root."""

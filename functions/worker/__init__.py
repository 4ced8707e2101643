"""The SQS consumer: runs jobs, a batch of records at a time."""

"""Reading, checking and splitting labeled data; every row remembers its file and line."""

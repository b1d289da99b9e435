"""The email channel: IMAP intake, SMTP replies, MIME parsing, threading, quoting and bounces."""

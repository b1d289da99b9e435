"""WeChat Official Accounts (公众号): signed (optionally encrypted) XML pushes in, customer-service API out."""

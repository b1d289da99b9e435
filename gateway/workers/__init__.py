"""``huiliu serve --workers N``: a supervisor process and the N gateway processes it keeps running."""

"""Static files of the browser client, served by the data server (package data)."""

"""The Panel dashboard: the server and its logins, the page, its tabs, and the run and campaign control shared
by sessions."""

"""The sweep report: what the runs of one or more sweep directories add up to."""

"""Single training runs: `rlan debug` in this process, `rlan train` on Ray Train workers."""

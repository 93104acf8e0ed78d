"""What a study is, with neither torch nor Ray: its spec, its arms, its command line, its default folders."""

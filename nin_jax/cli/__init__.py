"""The command line: the console scripts, their flags and `--print_config`."""

"""Reading the results files: where they live, validating them, and the runs, paper tables and analyses they hold."""

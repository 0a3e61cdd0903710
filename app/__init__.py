"""juicer's shell: the HTTP service, the scheduler, the command line, and the wiring between them."""

/*
 * cli.h: what the command-line front ends (main.c, audit/cli.c, approve/cli.c) share.
 */
#ifndef SLUICE_CORE_CLI_H
#define SLUICE_CORE_CLI_H

#include <stdbool.h>
#include <string.h>

/* Whether any of argv[from..argc-1] asks for the usage (-h or --help): the usage then goes to
 * stdout with exit status 0, whatever else the command line holds. */
static inline bool cli_asks_help(int argc, char **argv, int from)
{
    for (int i = from; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return true;
    return false;
}

#endif

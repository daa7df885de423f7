/*
 * The shared object the bypass suite loads with dlopen and LD_PRELOAD. Its
 * constructor announces that its code ran, so a test can tell a library
 * that was mapped executable from one that was refused.
 */
#include <stdio.h>

__attribute__((constructor)) static void announce(void)
{
	fputs("bypass-probe: constructor ran\n", stdout);
	fflush(stdout);
}

int bypass_probe(void)
{
	return 42;
}

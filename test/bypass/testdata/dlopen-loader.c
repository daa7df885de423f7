/*
 * A dynamically linked program for the bypass suite. With a path it
 * dlopens that shared object and calls its bypass_probe; without one it
 * only says it ran, for LD_PRELOAD and ld.so cases.
 */
#include <dlfcn.h>
#include <stdio.h>

/* Exit statuses the guest test tells apart. */
enum { DLOPEN_FAILED = 3, NO_SYMBOL = 4 };

int main(int argc, char **argv)
{
	void *lib;
	int (*probe)(void);

	if (argc < 2) {
		puts("dlopen-loader: ran");
		return 0;
	}
	lib = dlopen(argv[1], RTLD_NOW);
	if (!lib) {
		fprintf(stderr, "dlopen-loader: %s\n", dlerror());
		return DLOPEN_FAILED;
	}
	probe = (int (*)(void))dlsym(lib, "bypass_probe");
	if (!probe) {
		fprintf(stderr, "dlopen-loader: %s\n", dlerror());
		return NO_SYMBOL;
	}
	printf("bypass_probe=%d\n", probe());
	return 0;
}

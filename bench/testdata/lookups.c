// lookups: N getaddrinfo calls (AF_INET, SOCK_STREAM) of distinct names hI.bench.example, timed.
// Prints "ns_per_lookup=X ok=K" (K: lookups that returned an address).
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 500, ok = 0;
	const char *tag = argc > 2 ? argv[2] : "x";
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < n; i++) {
		char name[128];
		snprintf(name, sizeof name, "h%d-%s.bench.example", i, tag);
		struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
		if (getaddrinfo(name, "80", &hints, &res) == 0) {
			ok++;
			freeaddrinfo(res);
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
	printf("ns_per_lookup=%.0f\nok=%d\n", ns / n, ok);
	return 0;
}

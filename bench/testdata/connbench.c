// connbench: N sequential TCP connects (connect, one byte written, close) to HOST:PORT, either
// directly (mode "direct": what torsocks-go and the C torsocks intercept) or by speaking SOCKS5
// itself to SOCKS_HOST:SOCKS_PORT (mode "socks": the same greeting / CONNECT-by-text exchange
// torsocks uses). Prints "ns_per_connect=X". With BENCH_PARENT_STATUS=1 it also prints its parent's
// VmHWM and VmRSS from /proc (the parent being the torsocks supervisor when run under torsocks-go).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "socks5.h"

static int one(const char *mode, const char *host, int port, const char *shost, int sport) {
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	int on = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
	if (strcmp(mode, "socks") == 0) {
		sa.sin_port = htons(sport);
		inet_pton(AF_INET, shost, &sa.sin_addr);
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) goto fail;
		if (socks5(fd, host, port)) goto fail;
	} else {
		sa.sin_port = htons(port);
		inet_pton(AF_INET, host, &sa.sin_addr);
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) goto fail;
	}
	if (write(fd, "x", 1) != 1) goto fail;
	close(fd);
	return 0;
fail:
	perror("connbench");
	close(fd);
	return -1;
}

int main(int argc, char **argv) {
	if (argc < 5) {
		fprintf(stderr, "usage: connbench direct|socks N HOST PORT [SOCKS_HOST SOCKS_PORT]\n");
		return 2;
	}
	const char *mode = argv[1];
	long n = atol(argv[2]);
	const char *shost = argc > 5 ? argv[5] : "127.0.0.1";
	int sport = argc > 6 ? atoi(argv[6]) : 9050;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		if (one(mode, argv[3], atoi(argv[4]), shost, sport)) return 1;
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
	printf("ns_per_connect=%.0f\n", n ? ns / n : 0);
	if (getenv("BENCH_PARENT_STATUS")) {
		char path[64], line[256];
		snprintf(path, sizeof path, "/proc/%d/status", getppid());
		FILE *f = fopen(path, "r");
		while (f && fgets(line, sizeof line, f))
			if (!strncmp(line, "VmHWM", 5) || !strncmp(line, "VmRSS", 5)) printf("parent_%s", line);
		if (f) fclose(f);
	}
	return 0;
}

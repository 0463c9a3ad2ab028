// connpar: T threads making N sequential TCP connects each (connect, one byte written, close) to
// HOST:PORT, all at once: directly (mode "direct": what torsocks-go and the C torsocks intercept)
// or speaking SOCKS5 itself to SOCKS_HOST:SOCKS_PORT (mode "socks"). Prints "conn_per_s=X" (all
// threads' connects over the wall time from the first start to the last end).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "socks5.h"

static const char *mode, *host, *shost;
static int port, sport;
static long n;
static pthread_barrier_t start;

static void *worker(void *arg) {
	(void)arg;
	pthread_barrier_wait(&start);
	for (long i = 0; i < n; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET};
		int on = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
		if (strcmp(mode, "socks") == 0) {
			sa.sin_port = htons(sport);
			inet_pton(AF_INET, shost, &sa.sin_addr);
			if (connect(fd, (struct sockaddr *)&sa, sizeof sa) || socks5(fd, host, port)) goto fail;
		} else {
			sa.sin_port = htons(port);
			inet_pton(AF_INET, host, &sa.sin_addr);
			if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) goto fail;
		}
		if (write(fd, "x", 1) != 1) goto fail;
		close(fd);
		continue;
	fail:
		perror("connpar");
		exit(1);
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 6) {
		fprintf(stderr, "usage: connpar direct|socks THREADS N HOST PORT [SOCKS_HOST SOCKS_PORT]\n");
		return 2;
	}
	mode = argv[1];
	int t = atoi(argv[2]);
	n = atol(argv[3]);
	host = argv[4];
	port = atoi(argv[5]);
	shost = argc > 6 ? argv[6] : "127.0.0.1";
	sport = argc > 7 ? atoi(argv[7]) : 9050;
	pthread_t th[256];
	if (t < 1 || t > 256) return 2;
	pthread_barrier_init(&start, NULL, t + 1);
	for (int i = 0; i < t; i++) pthread_create(&th[i], NULL, worker, NULL);
	struct timespec a, b;
	pthread_barrier_wait(&start);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < t; i++) pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
	printf("conn_per_s=%.0f\n", t * n / s);
	return 0;
}

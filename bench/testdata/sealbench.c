// sealbench: bulk throughput and many open connections, directly (mode "direct": what torsocks
// intercepts) or speaking SOCKS5 itself (mode "socks", as connbench).
//   sealbench MODE bulk MB HOST PORT   asks the server for MB MiB (4 bytes, big-endian), reads them
//                                      until EOF; prints mib_per_s=X
//   sealbench MODE upload MB HOST PORT tells the server it sends MB MiB (the same 4 bytes with the
//                                      top bit set), writes them, reads the server's one-byte
//                                      answer (sent when it has read them all); prints mib_per_s=X
//   sealbench MODE hold N HOST PORT    opens N connections and keeps them; prints the parent's
//                                      (the supervisor's) VmRSS and descriptor count, then closes
//                                      them all, waits 2 s and prints them again
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "socks5.h"

static int dial(const char *mode, const char *host, int port) {
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	if (strcmp(mode, "socks") == 0) {
		sa.sin_port = htons(9050);
		inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) goto fail;
		if (socks5(fd, host, port)) goto fail;
	} else {
		sa.sin_port = htons(port);
		inet_pton(AF_INET, host, &sa.sin_addr);
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) goto fail;
	}
	return fd;
fail:
	perror("sealbench");
	close(fd);
	return -1;
}

static void parent(const char *when) {
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", getppid());
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, "VmRSS", 5) || !strncmp(line, "VmHWM", 5)) printf("%s_%s", when, line);
	if (f) fclose(f);
	snprintf(path, sizeof path, "/proc/%d/fd", getppid());
	DIR *d = opendir(path);
	int n = 0;
	while (d && readdir(d)) n++;
	if (d) closedir(d);
	printf("%s_fds=%d\n", when, n - 2);
}

int main(int argc, char **argv) {
	if (argc < 6) return 2;
	const char *mode = argv[1], *what = argv[2], *host = argv[4];
	long n = atol(argv[3]);
	int port = atoi(argv[5]);
	if (strcmp(what, "upload") == 0) {
		int fd = dial(mode, host, port);
		if (fd < 0) return 1;
		unsigned char req[4] = {0x80 | n >> 24, n >> 16, n >> 8, n};
		if (write(fd, req, 4) != 4) return 1;
		static char buf[1 << 20];
		memset(buf, 'u', sizeof buf);
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		for (long i = 0; i < n; i++)
			for (size_t off = 0; off < sizeof buf;) {
				ssize_t k = write(fd, buf + off, sizeof buf - off);
				if (k <= 0) {
					perror("sealbench: write");
					return 1;
				}
				off += k;
			}
		char ack;
		if (read(fd, &ack, 1) != 1) {
			fprintf(stderr, "sealbench: no answer from the server\n");
			return 1;
		}
		clock_gettime(CLOCK_MONOTONIC, &b);
		double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
		printf("mib_per_s=%.1f\n", n / s);
		return 0;
	}
	if (strcmp(what, "bulk") == 0) {
		int fd = dial(mode, host, port);
		if (fd < 0) return 1;
		unsigned char req[4] = {n >> 24, n >> 16, n >> 8, n};
		if (write(fd, req, 4) != 4) return 1;
		static char buf[1 << 20];
		long long total = 0;
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		for (;;) {
			ssize_t k = read(fd, buf, sizeof buf);
			if (k <= 0) break;
			total += k;
		}
		clock_gettime(CLOCK_MONOTONIC, &b);
		double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
		if (total != n << 20) {
			fprintf(stderr, "sealbench: got %lld bytes, want %ld\n", total, n << 20);
			return 1;
		}
		printf("mib_per_s=%.1f\n", total / s / (1 << 20));
		return 0;
	}
	int *fds = calloc(n, sizeof *fds);
	for (long i = 0; i < n; i++)
		if ((fds[i] = dial(mode, host, port)) < 0) return 1;
	parent("open");
	for (long i = 0; i < n; i++) close(fds[i]);
	sleep(2);
	parent("closed");
	return 0;
}

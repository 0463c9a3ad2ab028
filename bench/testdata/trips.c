// trips MODE N: N iterations of MODE, timed; prints "ns_per_iter=X". The notifications of a name
// lookup without the lookup (bench TestReportLookups, its floor):
//  udp: socket(AF_INET, SOCK_DGRAM|SOCK_NONBLOCK|SOCK_CLOEXEC) + connect(192.0.2.53:53) + close
//  sock: socket + close;  peer: getpeername on a unix socketpair (a notification let run)
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
	const char *mode = argv[1];
	int n = atoi(argv[2]);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53)};
	inet_pton(AF_INET, "192.0.2.53", &sa.sin_addr);
	int sp[2];
	socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < n; i++) {
		if (!strcmp(mode, "peer")) {
			struct sockaddr_storage ss; socklen_t l = sizeof ss;
			getpeername(sp[0], (struct sockaddr *)&ss, &l);
			continue;
		}
		int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) { perror("socket"); return 1; }
		if (!strcmp(mode, "udp") && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("connect"); return 1; }
		close(fd);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("ns_per_iter=%.0f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}

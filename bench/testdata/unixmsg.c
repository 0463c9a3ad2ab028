// unixmsg: N sendmsg/recvmsg round trips of 64 bytes over an AF_UNIX socketpair between two
// threads (the traffic pattern of D-Bus and Wayland clients). Prints "ns_per_roundtrip=X".
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int sv[2];
static long n;

static void xfer(int fd, int send_first) {
	char buf[64];
	memset(buf, 'x', sizeof buf);
	struct iovec iov = {buf, sizeof buf};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	for (long i = 0; i < n; i++) {
		if (send_first) {
			if (sendmsg(fd, &m, 0) != sizeof buf || recvmsg(fd, &m, 0) != sizeof buf) exit(1);
		} else {
			if (recvmsg(fd, &m, 0) != sizeof buf || sendmsg(fd, &m, 0) != sizeof buf) exit(1);
		}
	}
}

static void *peer(void *arg) {
	(void)arg;
	xfer(sv[1], 0);
	return NULL;
}

int main(int argc, char **argv) {
	n = argc > 1 ? atol(argv[1]) : 100000;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv)) return 2;
	pthread_t t;
	pthread_create(&t, NULL, peer, NULL);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	xfer(sv[0], 1);
	clock_gettime(CLOCK_MONOTONIC, &b);
	pthread_join(t, NULL);
	printf("ns_per_roundtrip=%.0f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}

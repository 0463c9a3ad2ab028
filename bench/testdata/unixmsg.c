// unixmsg: N sendmsg/recvmsg round trips of 64 bytes over an AF_UNIX socketpair between two
// threads (the traffic pattern of D-Bus and Wayland clients). With "fds" as the second argument
// every message also carries one descriptor (SCM_RIGHTS; the receiver closes it), as Wayland
// passes buffers. Prints "ns_per_roundtrip=X".
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int sv[2];
static long n;
static int with_fd, pass_fd;

static void xsend(int fd, struct msghdr *m) {
	char ctl[CMSG_SPACE(sizeof(int))];
	if (with_fd) {
		m->msg_control = ctl;
		m->msg_controllen = sizeof ctl;
		struct cmsghdr *c = CMSG_FIRSTHDR(m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	if (sendmsg(fd, m, 0) != 64) exit(1);
	m->msg_control = NULL;
	m->msg_controllen = 0;
}

static void xrecv(int fd, struct msghdr *m) {
	char ctl[CMSG_SPACE(sizeof(int))];
	m->msg_control = ctl;
	m->msg_controllen = sizeof ctl;
	if (recvmsg(fd, m, 0) != 64) exit(1);
	if (with_fd) {
		struct cmsghdr *c = CMSG_FIRSTHDR(m);
		int got;
		if (!c || c->cmsg_type != SCM_RIGHTS) exit(3);
		memcpy(&got, CMSG_DATA(c), sizeof(int));
		close(got);
	}
	m->msg_control = NULL;
	m->msg_controllen = 0;
}

static void xfer(int fd, int send_first) {
	char buf[64];
	memset(buf, 'x', sizeof buf);
	struct iovec iov = {buf, sizeof buf};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	for (long i = 0; i < n; i++) {
		if (send_first) {
			xsend(fd, &m);
			xrecv(fd, &m);
		} else {
			xrecv(fd, &m);
			xsend(fd, &m);
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
	with_fd = argc > 2 && strcmp(argv[2], "fds") == 0;
	int p[2];
	if (pipe(p)) return 2;
	pass_fd = p[0];
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

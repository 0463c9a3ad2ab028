// so_probe: a hostile program setting, before and while it connects, the socket options that
// decide where a connection's packets go, then connecting to the canary (203.0.113.10:80) through
// torsocks. Built 64-bit it uses setsockopt(2); built -m32 it goes through socketcall(2), whose
// arguments the filter cannot see. Prints one line per option: "NAME ok" or "NAME errno-name",
// then "connect ok" or "connect ERR", and for -m32 the round trip of an allowed option.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/net.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

static int so(int fd, int level, int name, const void *val, socklen_t len) {
#if defined(__i386__)
	unsigned long a[5] = {(unsigned long)fd, (unsigned long)level, (unsigned long)name, (unsigned long)val, len};
	return (int)syscall(SYS_socketcall, SYS_SETSOCKOPT, a);
#else
	return setsockopt(fd, level, name, val, len);
#endif
}

static void report(const char *what, int r) {
	printf("%s %s\n", what, r == 0 ? "ok" : (errno == EPERM ? "EPERM" : strerror(errno)));
}

// A loose source route whose first hop is the canary host: 8 bytes, NOP padding first.
static const unsigned char lsrr[8] = {1, 0x83, 7, 4, 203, 0, 113, 10};
static volatile int racing = 1;
static int racefd;

static void *toggle(void *arg) {
	(void)arg;
	while (racing) {
		so(racefd, IPPROTO_IP, IP_OPTIONS, lsrr, sizeof lsrr);
		so(racefd, IPPROTO_IP, IP_OPTIONS, NULL, 0);
	}
	return NULL;
}

static int dial(int fd) {
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(80)};
	inet_pton(AF_INET, "203.0.113.10", &sa.sin_addr);
	return connect(fd, (struct sockaddr *)&sa, sizeof sa);
}

int main(void) {
	setvbuf(stdout, NULL, _IONBF, 0);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	report("IP_OPTIONS", so(fd, IPPROTO_IP, IP_OPTIONS, lsrr, sizeof lsrr));
	report("SO_BINDTODEVICE", so(fd, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3));
	int one = 1, lo = 1;
	report("IP_UNICAST_IF", so(fd, IPPROTO_IP, IP_UNICAST_IF, &lo, sizeof lo));
	report("SO_KEEPALIVE", so(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one));
	report("TCP_NODELAY", so(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
	struct timeval tv = {7, 250000};
	report("SO_RCVTIMEO", so(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
	struct timeval got = {0, 0};
	socklen_t gl = sizeof got;
	getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &got, &gl);
	printf("SO_RCVTIMEO read back %ld.%06ld\n", (long)got.tv_sec, (long)got.tv_usec);
	printf("connect %s\n", dial(fd) == 0 ? "ok" : strerror(errno));
	close(fd);

	// The option set and cleared by another thread while the connect runs.
	racefd = socket(AF_INET, SOCK_STREAM, 0);
	pthread_t th;
	pthread_create(&th, NULL, toggle, NULL);
	int r = dial(racefd);
	racing = 0;
	pthread_join(th, NULL);
	printf("raced connect %s\n", r == 0 ? "ok" : strerror(errno));
	close(racefd);

	int fd6 = socket(AF_INET6, SOCK_STREAM, 0);
	// A type 0 routing header with one address (2001:db8::10).
	unsigned char rthdr[24] = {0, 2, 0, 1};
	inet_pton(AF_INET6, "2001:db8::10", rthdr + 8);
	report("IPV6_RTHDR", so(fd6, IPPROTO_IPV6, IPV6_RTHDR, rthdr, sizeof rthdr));
	report("IPV6_UNICAST_IF", so(fd6, IPPROTO_IPV6, IPV6_UNICAST_IF, &lo, sizeof lo));
	report("IPV6_V6ONLY", so(fd6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
	close(fd6);
	return 0;
}

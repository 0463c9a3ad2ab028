// seal_attack: a hostile program that sets, on its TCP socket, the options that would decide where
// the supervisor's connect of that socket sends its packets (issue 10), then connects through
// torsocks and talks to the destination.
//
//   seal_attack connect ADDR PORT SPEC...   a socket of ADDR's family (an IPv4-mapped ADDR gives
//                                           an IPv6 socket), every SPEC set before connect, the
//                                           connect, every SPEC set again on the connected
//                                           socket, then one request (HTTP GET; a DNS query
//                                           for port 53) and its reply
//   seal_attack listen ADDR SPEC...         listens on ADDR:0, prints "listening PORT", accepts one
//                                           connection, sets every SPEC on the accepted socket,
//                                           writes "hello from accepted\n" and closes
//
// SPEC (HOP: a first hop or next hop on the test interface):
//   lsrr:HOP ssrr:HOP     IP_OPTIONS with a loose / strict source route: HOP, then 32 bytes of
//                         the program's data in the route slots (IPv4 and IPv6-mapped sockets)
//   race:HOP              a thread sets and clears the LSRR while the connect runs (before only)
//   rthdr0:HOP6 srh:HOP6  IPV6_RTHDR, a type 0 routing header / a segment routing header (type 4)
//                         whose first segment is HOP6, with a data segment after it
//   dev:IFNAME            SO_BINDTODEVICE
//   ifindex:N             SO_BINDTOIFINDEX
//   md5:ADDR              TCP_MD5SIG for peer ADDR (a SYN-ACK without the signature is dropped)
//   filter                SO_ATTACH_FILTER of a filter that drops every packet
//   minttl                IP_MINTTL / IPV6_MINHOPCOUNT 255 (loopback's packets carry 64)
//   freebind:ADDR         IP_FREEBIND / IPV6_FREEBIND and bind() to ADDR:0 (before only)
//   sndtimeo:MS           SO_SNDTIMEO (a blocking connect gives up after MS: the tests' control
//                         run, without torsocks, of attacks whose SYN nobody answers)
//
// Built -m32 every socket call goes through socketcall(2), whose arguments are in memory.
// Output, one line each: "cookie N" (SO_NETNS_COOKIE of the socket), "before SPEC RESULT",
// "race SETS-ACCEPTED/SETS", "connect RESULT MS", "after SPEC RESULT", "reply WHAT"; RESULT is
// "ok" or the errno's name, MS the milliseconds the connect took.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/net.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_BINDTOIFINDEX
#define SO_BINDTOIFINDEX 62
#endif
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef IPV6_MINHOPCOUNT
#define IPV6_MINHOPCOUNT 73
#endif
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif

#if defined(__i386__)
static long sc(int call, unsigned long a0, unsigned long a1, unsigned long a2, unsigned long a3, unsigned long a4) {
	unsigned long a[6] = {a0, a1, a2, a3, a4, 0};
	return syscall(SYS_socketcall, call, a);
}
#define SOCKET(d, t, p) (int)sc(SYS_SOCKET, d, t, p, 0, 0)
#define SETSOCKOPT(fd, l, n, v, len) (int)sc(SYS_SETSOCKOPT, fd, l, n, (unsigned long)(v), len)
#define GETSOCKOPT(fd, l, n, v, lenp) (int)sc(SYS_GETSOCKOPT, fd, l, n, (unsigned long)(v), (unsigned long)(lenp))
#define CONNECT(fd, sa, len) (int)sc(SYS_CONNECT, fd, (unsigned long)(sa), len, 0, 0)
#define BIND(fd, sa, len) (int)sc(SYS_BIND, fd, (unsigned long)(sa), len, 0, 0)
#define LISTEN(fd, n) (int)sc(SYS_LISTEN, fd, n, 0, 0, 0)
#define ACCEPT(fd) (int)sc(SYS_ACCEPT, fd, 0, 0, 0, 0)
#define GETSOCKNAME(fd, sa, lenp) (int)sc(SYS_GETSOCKNAME, fd, (unsigned long)(sa), (unsigned long)(lenp), 0, 0)
#else
#define SOCKET socket
#define SETSOCKOPT setsockopt
#define GETSOCKOPT getsockopt
#define CONNECT connect
#define BIND bind
#define LISTEN listen
#define ACCEPT(fd) accept(fd, NULL, NULL)
#define GETSOCKNAME getsockname
#endif

static const char *res(int r) {
	static char buf[32];
	if (r == 0)
		return "ok";
	switch (errno) {
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case EINVAL: return "EINVAL";
	case ENODEV: return "ENODEV";
	case ENOPROTOOPT: return "ENOPROTOOPT";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ENETUNREACH: return "ENETUNREACH";
	case EHOSTUNREACH: return "EHOSTUNREACH";
	case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
	case ECONNRESET: return "ECONNRESET";
	case EINPROGRESS: return "EINPROGRESS";
	case ENOSYS: return "ENOSYS";
	}
	snprintf(buf, sizeof buf, "errno%d", errno);
	return buf;
}

// parse fills sa from ADDR (and port), returning its length; an IPv4-mapped address and every
// IPv6 address give AF_INET6.
static socklen_t parse(const char *addr, int port, struct sockaddr_storage *ss) {
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		return sizeof *s4;
	}
	if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		return sizeof *s6;
	}
	fprintf(stderr, "seal_attack: bad address %s\n", addr);
	exit(2);
}

static int family; // of the socket under attack

// srcroute builds an IP_OPTIONS source route (type 0x83 loose, 0x89 strict): a NOP, then the
// route with HOP first and 8 addresses' worth of the program's data: 40 bytes, the maximum.
static int srcroute(unsigned char *o, unsigned char type, const char *hop) {
	struct in_addr a;
	if (inet_pton(AF_INET, hop, &a) != 1)
		exit(2);
	o[0] = 1; // NOP
	o[1] = type;
	o[2] = 39;
	o[3] = 4;
	memcpy(o + 4, &a, 4);
	memcpy(o + 8, "SECRET-DATA-OF-THE-PROGRAM-0123", 32);
	return 40;
}

// rthdr builds an IPv6 routing header: type 0 (HOP, then a data address) or a segment routing
// header (segments stored last first: [0] the final destination, filled in by the kernel, [1] a
// data segment, [2] HOP, the first).
static int rthdr(unsigned char *h, int type, const char *hop) {
	struct in6_addr a;
	if (inet_pton(AF_INET6, hop, &a) != 1)
		exit(2);
	memset(h, 0, 56);
	if (type == 0) {
		h[1] = 4; // (8 + 2*16)/8 - 1
		h[2] = 0;
		h[3] = 2;
		memcpy(h + 8, &a, 16);
		memcpy(h + 24, "SECRET-DATA-0123", 16);
		return 40;
	}
	h[1] = 6; // 3 segments
	h[2] = 4;
	h[3] = 2; // segments left
	h[4] = 2; // last entry
	memcpy(h + 8 + 16, "SECRET-DATA-0123", 16);
	memcpy(h + 8 + 32, &a, 16);
	return 56;
}

// apply sets one SPEC on fd; returns what the last setsockopt (or bind) gave.
static int apply(int fd, const char *spec) {
	char kind[32];
	const char *arg = strchr(spec, ':');
	size_t kl = arg ? (size_t)(arg - spec) : strlen(spec);
	if (kl >= sizeof kind)
		exit(2);
	memcpy(kind, spec, kl);
	kind[kl] = 0;
	if (arg)
		arg++;
	unsigned char buf[64];
	int one = 1, ttl = 255;
	if (!strcmp(kind, "lsrr") || !strcmp(kind, "ssrr") || !strcmp(kind, "race")) {
		int n = srcroute(buf, kind[0] == 's' ? 0x89 : 0x83, arg);
		return SETSOCKOPT(fd, IPPROTO_IP, IP_OPTIONS, buf, n);
	}
	if (!strcmp(kind, "rthdr0") || !strcmp(kind, "srh")) {
		int n = rthdr(buf, kind[0] == 'r' ? 0 : 4, arg);
		return SETSOCKOPT(fd, IPPROTO_IPV6, IPV6_RTHDR, buf, n);
	}
	if (!strcmp(kind, "dev"))
		return SETSOCKOPT(fd, SOL_SOCKET, SO_BINDTODEVICE, arg, strlen(arg) + 1);
	if (!strcmp(kind, "ifindex")) {
		int idx = atoi(arg);
		return SETSOCKOPT(fd, SOL_SOCKET, SO_BINDTOIFINDEX, &idx, sizeof idx);
	}
	if (!strcmp(kind, "md5")) {
		struct tcp_md5sig m;
		memset(&m, 0, sizeof m);
		socklen_t l = parse(arg, 0, &m.tcpm_addr);
		(void)l;
		m.tcpm_keylen = 16;
		memcpy(m.tcpm_key, "0123456789abcdef", 16);
		return SETSOCKOPT(fd, IPPROTO_TCP, TCP_MD5SIG, &m, sizeof m);
	}
	if (!strcmp(kind, "filter")) {
		static struct sock_filter drop[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
		struct sock_fprog p = {.len = 1, .filter = drop};
		return SETSOCKOPT(fd, SOL_SOCKET, SO_ATTACH_FILTER, &p, sizeof p);
	}
	if (!strcmp(kind, "minttl")) {
		if (family == AF_INET6)
			return SETSOCKOPT(fd, IPPROTO_IPV6, IPV6_MINHOPCOUNT, &ttl, sizeof ttl);
		return SETSOCKOPT(fd, IPPROTO_IP, IP_MINTTL, &ttl, sizeof ttl);
	}
	if (!strcmp(kind, "freebind")) {
		int r = family == AF_INET6 ? SETSOCKOPT(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one)
		                           : SETSOCKOPT(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
		if (r != 0)
			return r;
		struct sockaddr_storage ss;
		socklen_t l = parse(arg, 0, &ss);
		return BIND(fd, (struct sockaddr *)&ss, l);
	}
	if (!strcmp(kind, "sndtimeo")) {
		struct timeval tv = {atoi(arg) / 1000, atoi(arg) % 1000 * 1000};
		return SETSOCKOPT(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	}
	fprintf(stderr, "seal_attack: unknown spec %s\n", spec);
	exit(2);
}

static volatile int racing;
static int racefd;
static const char *racehop;
static long raceSets, raceOK;

static void *toggle(void *arg) {
	(void)arg;
	unsigned char o[40];
	int n = srcroute(o, 0x83, racehop);
	while (racing) {
		raceSets++;
		if (SETSOCKOPT(racefd, IPPROTO_IP, IP_OPTIONS, o, n) == 0)
			raceOK++;
		SETSOCKOPT(racefd, IPPROTO_IP, IP_OPTIONS, NULL, 0);
	}
	return NULL;
}

static long ms_since(struct timespec *t0) {
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

static void cookie(int fd) {
	uint64_t c = 0;
	socklen_t l = sizeof c;
	GETSOCKOPT(fd, SOL_SOCKET, SO_NETNS_COOKIE, &c, &l);
	printf("cookie %llu\n", (unsigned long long)c);
}

// request sends an HTTP GET (or, to port 53, a DNS query for example.com A over TCP) and says
// what came back.
static void request(int fd, int port) {
	char buf[4096];
	if (port == 53) {
		static const unsigned char q[] = {0, 29, 0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0,
		                                  7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1};
		if (write(fd, q, sizeof q) != (ssize_t)sizeof q) {
			printf("reply none %s\n", res(-1));
			return;
		}
		ssize_t n = read(fd, buf, sizeof buf);
		if (n >= 4 && (unsigned char)buf[2] == 0x12 && (unsigned char)buf[3] == 0x34)
			printf("reply dns %zd bytes\n", n);
		else
			printf("reply none %s\n", n < 0 ? res(-1) : "short");
		return;
	}
	static const char get[] = "GET / HTTP/1.0\r\nHost: x\r\n\r\n";
	if (write(fd, get, sizeof get - 1) != (ssize_t)sizeof get - 1) {
		printf("reply none %s\n", res(-1));
		return;
	}
	size_t got = 0;
	ssize_t n;
	while (got < sizeof buf - 1 && (n = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
		got += n;
	buf[got] = 0;
	printf("reply %s\n", strstr(buf, "canary") ? "canary" : got ? "other" : "none");
}

static int do_connect(int argc, char **argv) {
	int port = atoi(argv[3]);
	struct sockaddr_storage ss;
	socklen_t sl = parse(argv[2], port, &ss);
	family = ss.ss_family;
	int fd = SOCKET(family, SOCK_STREAM, 0);
	if (fd < 0) {
		printf("socket %s\n", res(-1));
		return 1;
	}
	cookie(fd);
	const char *race = NULL;
	for (int i = 4; i < argc; i++) {
		if (!strncmp(argv[i], "race:", 5)) {
			race = argv[i] + 5;
			continue;
		}
		printf("before %s %s\n", argv[i], res(apply(fd, argv[i])));
	}
	pthread_t th;
	if (race) {
		racefd = fd;
		racehop = race;
		racing = 1;
		pthread_create(&th, NULL, toggle, NULL);
		while (raceSets < 100) // the thread is toggling before the connect starts
			sched_yield();
	}
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int r = CONNECT(fd, (struct sockaddr *)&ss, sl);
	int e = errno;
	long took = ms_since(&t0);
	if (race) {
		racing = 0;
		pthread_join(th, NULL);
		printf("race %ld/%ld\n", raceOK, raceSets);
	}
	errno = e;
	printf("connect %s %ld\n", res(r), took);
	for (int i = 4; i < argc; i++) {
		if (strncmp(argv[i], "race:", 5) && strncmp(argv[i], "freebind:", 9) && strncmp(argv[i], "sndtimeo:", 9))
			printf("after %s %s\n", argv[i], res(apply(fd, argv[i])));
	}
	if (r == 0)
		request(fd, port);
	close(fd);
	return 0;
}

static int do_listen(int argc, char **argv) {
	struct sockaddr_storage ss;
	socklen_t sl = parse(argv[2], 0, &ss);
	family = ss.ss_family;
	int l = SOCKET(family, SOCK_STREAM, 0);
	int one = 1;
	SETSOCKOPT(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (BIND(l, (struct sockaddr *)&ss, sl) != 0 || LISTEN(l, 4) != 0) {
		printf("listen %s\n", res(-1));
		return 0;
	}
	socklen_t len = sizeof ss;
	GETSOCKNAME(l, (struct sockaddr *)&ss, &len);
	printf("listening %d\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
	int fd = ACCEPT(l);
	if (fd < 0) {
		printf("accept %s\n", res(-1));
		return 0;
	}
	cookie(fd);
	for (int i = 3; i < argc; i++)
		printf("after %s %s\n", argv[i], res(apply(fd, argv[i])));
	static const char hello[] = "hello from accepted\n";
	printf("write %s\n", write(fd, hello, sizeof hello - 1) == (ssize_t)sizeof hello - 1 ? "ok" : res(-1));
	close(fd);
	close(l);
	return 0;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc >= 4 && !strcmp(argv[1], "connect"))
		return do_connect(argc, argv);
	if (argc >= 3 && !strcmp(argv[1], "listen"))
		return do_listen(argc, argv);
	fprintf(stderr, "usage: seal_attack connect ADDR PORT SPEC... | listen ADDR SPEC...\n");
	return 2;
}

/* dns_probe: the libc resolver paths under torsocks, one command per run; key=value lines.
 * Portable C: built with glibc (gcc) and statically with musl (musl-gcc -static).
 *
 *	dns_probe gai 4|6|any NAME...      getaddrinfo: "gai name=N rc=0|EAI_x addrs=A,B ms=T"
 *	dns_probe connect NAME PORT [4|6]  getaddrinfo, connect to the first address that answers,
 *	                                   getpeername, HTTP GET: "connect=0 addr=A", "peer=A:P", "page=canary"
 *	dns_probe rev NAME 4|6             getaddrinfo, then getnameinfo(NI_NAMEREQD) and gethostbyaddr of
 *	                                   the address: "addr=A", "nameinfo=N", "hostbyaddr=N"
 *	dns_probe revaddr ADDR             the same for a literal address
 *	dns_probe hostbyname NAME          gethostbyname: "hostbyname=A h_errno=N"
 *	dns_probe resq NAME A|AAAA|MX|TXT|SRV|HTTPS  res_query: "resq len=N rcode=R ancount=C h_errno=H ms=T"
 *	dns_probe storm THREADS N          THREADS threads, N getaddrinfo each of distinct names
 *	dns_probe hold N1 N2 N3            test of a full stand-in range of 2 addresses (see main)
 *	dns_probe quic ADDR PORT           connected UDP socket: send, then recv: "recv=-1 errno=E ms=T"
 *	dns_probe fuzz N SEED              N malformed datagrams to the nameservers, malformed TCP too,
 *	                                   then a normal lookup; exits 7 when done
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *errname(int e)
{
	static char buf[32];
	switch (e) {
	case 0: return "0";
	case EPERM: return "EPERM";
	case ECONNREFUSED: return "ECONNREFUSED";
	case EHOSTUNREACH: return "EHOSTUNREACH";
	case ENETUNREACH: return "ENETUNREACH";
	case EAGAIN: return "EAGAIN";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ECONNRESET: return "ECONNRESET";
	case EINVAL: return "EINVAL";
	case ENOSYS: return "ENOSYS";
	case EACCES: return "EACCES";
	}
	snprintf(buf, sizeof buf, "errno%d", e);
	return buf;
}

static const char *gainame(int rc)
{
	static char buf[32];
	switch (rc) {
	case 0: return "0";
	case EAI_AGAIN: return "EAI_AGAIN";
	case EAI_FAIL: return "EAI_FAIL";
	case EAI_NONAME: return "EAI_NONAME";
	case EAI_SYSTEM: return "EAI_SYSTEM";
	case EAI_FAMILY: return "EAI_FAMILY";
#ifdef EAI_NODATA
	case EAI_NODATA: return "EAI_NODATA";
#endif
	}
	snprintf(buf, sizeof buf, "EAI%d", rc);
	return buf;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static int family(const char *f)
{
	if (!strcmp(f, "4")) return AF_INET;
	if (!strcmp(f, "6")) return AF_INET6;
	return AF_UNSPEC;
}

static void ntop(const struct sockaddr *sa, char *buf, size_t n, int with_port)
{
	char a[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, a, sizeof a);
		port = ntohs(s4->sin_port);
		if (with_port) snprintf(buf, n, "%s:%d", a, port);
		else snprintf(buf, n, "%s", a);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof a);
		port = ntohs(s6->sin6_port);
		if (with_port) snprintf(buf, n, "[%s]:%d", a, port);
		else snprintf(buf, n, "%s", a);
	} else {
		snprintf(buf, n, "family%d", sa->sa_family);
	}
}

static int lookup(const char *name, const char *port, int fam, struct addrinfo **res)
{
	struct addrinfo hints;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = fam;
	hints.ai_socktype = SOCK_STREAM;
	return getaddrinfo(name, port, &hints, res);
}

static int cmd_gai(int fam, char **names, int n)
{
	for (int i = 0; i < n; i++) {
		struct addrinfo *res = NULL;
		long t0 = now_ms();
		int rc = lookup(names[i], NULL, fam, &res);
		long ms = now_ms() - t0;
		char addrs[1024] = "";
		for (struct addrinfo *ai = res; rc == 0 && ai; ai = ai->ai_next) {
			char a[INET6_ADDRSTRLEN + 8];
			ntop(ai->ai_addr, a, sizeof a, 0);
			if (strstr(addrs, a)) continue;
			if (addrs[0]) strncat(addrs, ",", sizeof addrs - strlen(addrs) - 1);
			strncat(addrs, a, sizeof addrs - strlen(addrs) - 1);
		}
		if (res) freeaddrinfo(res);
		printf("gai name=%s rc=%s addrs=%s ms=%ld\n", names[i], gainame(rc), addrs, ms);
	}
	return 0;
}

/* fetch sends an HTTP request on fd and tells whether the page is the canary's. */
static int fetch(int fd, const char *host)
{
	char req[512];
	int n = snprintf(req, sizeof req, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", host);
	if (write(fd, req, n) != n) return 0;
	char buf[4096];
	size_t got = 0;
	ssize_t r;
	while (got < sizeof buf - 1 && (r = read(fd, buf + got, sizeof buf - 1 - got)) > 0) got += r;
	buf[got] = 0;
	return strstr(buf, "canary") != NULL;
}

/* dial resolves name and connects to the first address that answers; -1 on failure. */
static int dial(const char *name, const char *port, int fam, int quiet)
{
	struct addrinfo *res = NULL;
	int rc = lookup(name, port, fam, &res);
	if (rc != 0) {
		printf("gai name=%s rc=%s\n", name, gainame(rc));
		return -1;
	}
	int fd = -1;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		char a[INET6_ADDRSTRLEN + 8];
		ntop(ai->ai_addr, a, sizeof a, 0);
		fd = socket(ai->ai_family, SOCK_STREAM, 0);
		if (fd < 0) {
			printf("socket=-1 errno=%s\n", errname(errno));
			continue;
		}
		struct timeval tv = {.tv_sec = 20};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
		printf("connect=%d errno=%s addr=%s name=%s\n", r, errname(r < 0 ? errno : 0), a, name);
		if (r == 0) break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd >= 0 && !quiet) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof peer;
		if (getpeername(fd, (struct sockaddr *)&peer, &plen) == 0) {
			char p[INET6_ADDRSTRLEN + 8];
			ntop((struct sockaddr *)&peer, p, sizeof p, 1);
			printf("peer=%s\n", p);
		} else {
			printf("getpeername=-1 errno=%s\n", errname(errno));
		}
	}
	return fd;
}

static int cmd_connect(const char *name, const char *port, int fam)
{
	int fd = dial(name, port, fam, 0);
	if (fd < 0) return 0;
	printf("page=%s\n", fetch(fd, name) ? "canary" : "none");
	close(fd);
	return 0;
}

static void rev(const struct sockaddr *sa, socklen_t len)
{
	char host[NI_MAXHOST];
	int rc = getnameinfo(sa, len, host, sizeof host, NULL, 0, NI_NAMEREQD);
	printf("nameinfo=%s rc=%s\n", rc == 0 ? host : "-", gainame(rc));
	struct hostent *h;
	if (sa->sa_family == AF_INET)
		h = gethostbyaddr(&((const struct sockaddr_in *)sa)->sin_addr, 4, AF_INET);
	else
		h = gethostbyaddr(&((const struct sockaddr_in6 *)sa)->sin6_addr, 16, AF_INET6);
	printf("hostbyaddr=%s h_errno=%d\n", h ? h->h_name : "-", h ? 0 : h_errno);
}

static int cmd_rev(const char *name, int fam)
{
	struct addrinfo *res = NULL;
	int rc = lookup(name, NULL, fam, &res);
	if (rc != 0) {
		printf("gai name=%s rc=%s\n", name, gainame(rc));
		return 0;
	}
	char a[INET6_ADDRSTRLEN + 8];
	ntop(res->ai_addr, a, sizeof a, 0);
	printf("addr=%s\n", a);
	rev(res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

static int cmd_revaddr(const char *addr)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *s4 = (void *)&ss;
	struct sockaddr_in6 *s6 = (void *)&ss;
	if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		rev((struct sockaddr *)&ss, sizeof *s4);
	} else if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		rev((struct sockaddr *)&ss, sizeof *s6);
	} else {
		return 2;
	}
	return 0;
}

static int cmd_hostbyname(const char *name)
{
	struct hostent *h = gethostbyname(name);
	char a[INET6_ADDRSTRLEN] = "-";
	if (h && h->h_addr_list[0]) inet_ntop(h->h_addrtype, h->h_addr_list[0], a, sizeof a);
	printf("hostbyname=%s h_errno=%d\n", a, h ? 0 : h_errno);
	return 0;
}

static int cmd_resq(const char *name, const char *type)
{
	int t = 0;
	if (!strcmp(type, "A")) t = 1;
	else if (!strcmp(type, "AAAA")) t = 28;
	else if (!strcmp(type, "MX")) t = 15;
	else if (!strcmp(type, "TXT")) t = 16;
	else if (!strcmp(type, "SRV")) t = 33;
	else if (!strcmp(type, "HTTPS")) t = 65;
	else if (!strcmp(type, "PTR")) t = 12;
	else return 2;
	unsigned char buf[4096];
	res_init();
	h_errno = 0;
	long t0 = now_ms();
	int n = res_query(name, 1, t, buf, sizeof buf);
	long ms = now_ms() - t0;
	int rcode = -1, an = -1;
	if (n >= 12) {
		rcode = buf[3] & 0xf;
		an = buf[6] << 8 | buf[7];
	}
	printf("resq type=%s len=%d rcode=%d ancount=%d h_errno=%d ms=%ld\n", type, n, rcode, an, n < 0 ? h_errno : 0, ms);
	/* The first answer's data, for A and AAAA. */
	if (n > 12 && an > 0 && (t == 1 || t == 28)) {
		int off = 12;
		while (off < n && buf[off]) off += buf[off] + 1; /* question name (not compressed) */
		off += 5;
		if (off + 12 <= n) {
			if ((buf[off] & 0xc0) == 0xc0) off += 2;
			else { while (off < n && buf[off]) off += buf[off] + 1; off++; }
			int rdlen = buf[off + 8] << 8 | buf[off + 9];
			char a[INET6_ADDRSTRLEN] = "?";
			if (off + 10 + rdlen <= n)
				inet_ntop(rdlen == 4 ? AF_INET : AF_INET6, buf + off + 10, a, sizeof a);
			printf("resq answer=%s\n", a);
		}
	}
	return 0;
}

struct storm {
	int id, n, ok, fail;
	char first[256];
};

static void *storm_thread(void *p)
{
	struct storm *s = p;
	for (int i = 0; i < s->n; i++) {
		char name[128];
		snprintf(name, sizeof name, "n%d-t%d.storm.test", i, s->id);
		struct addrinfo *res = NULL;
		int rc = lookup(name, "80", AF_UNSPEC, &res);
		int good = rc == 0 && res;
		if (res) freeaddrinfo(res);
		if (good) {
			s->ok++;
		} else {
			if (!s->fail) snprintf(s->first, sizeof s->first, "%s: %s", name, gainame(rc));
			s->fail++;
		}
	}
	return NULL;
}

static int cmd_storm(int threads, int n)
{
	struct storm st[64];
	pthread_t th[64];
	if (threads > 64) threads = 64;
	long t0 = now_ms();
	for (int i = 0; i < threads; i++) {
		memset(&st[i], 0, sizeof st[i]);
		st[i].id = i;
		st[i].n = n;
		pthread_create(&th[i], NULL, storm_thread, &st[i]);
	}
	int ok = 0, fail = 0;
	const char *first = "";
	for (int i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		ok += st[i].ok;
		fail += st[i].fail;
		if (st[i].fail && !first[0]) first = st[i].first;
	}
	printf("storm ok=%d fail=%d ms=%ld first=%s\n", ok, fail, now_ms() - t0, first);
	return 0;
}

/* cmd_hold: with an onion range of two addresses: N1 and N2 connected and held; an IPv4 lookup
 * of N3 must fail (no address is free) without handing out a live one; once N1's connection is
 * closed, N3 gets an address (retrying for up to 10 s: the release is seen when the socket is
 * gone) and connects. */
static int cmd_hold(char **names)
{
	int fd1 = dial(names[0], "80", AF_INET, 0);
	int fd2 = dial(names[1], "80", AF_INET, 0);
	if (fd1 < 0 || fd2 < 0) {
		printf("hold=failed\n");
		return 0;
	}
	printf("held=2\n");
	char *full[] = {names[2]};
	cmd_gai(AF_INET, full, 1);
	cmd_gai(AF_UNSPEC, full, 1);
	close(fd1);
	printf("closed=%s\n", names[0]);
	long t0 = now_ms();
	for (;;) {
		struct addrinfo *res = NULL;
		int rc = lookup(names[2], "80", AF_INET, &res);
		if (res) freeaddrinfo(res);
		if (rc == 0) break;
		if (now_ms() - t0 > 10000) {
			printf("after-close rc=%s\n", gainame(rc));
			return 0;
		}
		usleep(100000);
	}
	printf("after-close rc=0 ms=%ld\n", now_ms() - t0);
	int fd3 = dial(names[2], "80", AF_INET, 0);
	if (fd3 >= 0) {
		printf("page3=%s\n", fetch(fd3, names[2]) ? "canary" : "none");
		close(fd3);
	}
	/* The connection held all along still works. */
	printf("page2=%s\n", fetch(fd2, names[1]) ? "canary" : "none");
	close(fd2);
	return 0;
}

static socklen_t parse_addr(const char *a, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *s4 = (void *)ss;
	struct sockaddr_in6 *s6 = (void *)ss;
	if (inet_pton(AF_INET, a, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		return sizeof *s4;
	}
	if (inet_pton(AF_INET6, a, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		return sizeof *s6;
	}
	fprintf(stderr, "bad address %s\n", a);
	exit(2);
}

static int cmd_quic(const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t len = parse_addr(addr, port, &ss);
	int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
	printf("socket=%d errno=%s\n", fd < 0 ? -1 : 0, errname(fd < 0 ? errno : 0));
	if (fd < 0) return 0;
	int r = connect(fd, (struct sockaddr *)&ss, len);
	printf("connect=%d errno=%s\n", r, errname(r < 0 ? errno : 0));
	if (r < 0) return 0;
	struct timeval tv = {.tv_sec = 5};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	char initial[1200];
	memset(initial, 0xc3, sizeof initial); /* a QUIC Initial's first byte, padded */
	ssize_t n = send(fd, initial, sizeof initial, 0);
	printf("send=%zd errno=%s\n", n, errname(n < 0 ? errno : 0));
	char buf[2048];
	long t0 = now_ms();
	n = recv(fd, buf, sizeof buf, 0);
	printf("recv=%zd errno=%s ms=%ld\n", n, errname(n < 0 ? errno : 0), now_ms() - t0);
	return 0;
}

static unsigned long rng = 1;
static unsigned rnd(void)
{
	rng = rng * 6364136223846793005UL + 1442695040888963407UL;
	return rng >> 33;
}

/* query builds a well-formed query for name (type A) into b; its length. */
static int query(unsigned char *b, const char *name, int type)
{
	int n = 0;
	unsigned id = rnd();
	b[n++] = id >> 8; b[n++] = id; b[n++] = 1; b[n++] = 0; /* RD */
	b[n++] = 0; b[n++] = 1; b[n++] = 0; b[n++] = 0; b[n++] = 0; b[n++] = 0; b[n++] = 0; b[n++] = 0;
	const char *p = name;
	while (*p) {
		const char *dot = strchr(p, '.');
		int l = dot ? dot - p : (int)strlen(p);
		b[n++] = l;
		memcpy(b + n, p, l);
		n += l;
		p += l + (dot ? 1 : 0);
	}
	b[n++] = 0;
	b[n++] = type >> 8; b[n++] = type; b[n++] = 0; b[n++] = 1;
	return n;
}

/* mutate turns a good query into a bad one, 10 ways. */
static int mutate(unsigned char *b, int n, int cap)
{
	switch (rnd() % 10) {
	case 0: /* random bytes, random length */
		n = rnd() % cap;
		for (int i = 0; i < n; i++) b[i] = rnd();
		return n;
	case 1: /* truncated */
		return rnd() % n;
	case 2: /* bit flips */
		for (int i = 0, k = 1 + rnd() % 8; i < k; i++) b[rnd() % n] ^= 1 << (rnd() % 8);
		return n;
	case 3: /* counts lie */
		b[4 + 2 * (rnd() % 4)] = rnd(); b[5 + 2 * (rnd() % 4)] = rnd();
		return n;
	case 4: /* compression loop in the question name */
		b[12] = 0xc0; b[13] = 12;
		return n;
	case 5: /* a label longer than the message */
		b[12] = 63;
		return 14;
	case 6: /* QR set (a response: must be dropped, never answered into a loop) */
		b[2] |= 0x80;
		return n;
	case 7: /* odd opcode, class, type */
		b[2] = (b[2] & 0x87) | (rnd() % 16) << 3;
		b[n - 1] = rnd(); b[n - 3] = rnd();
		return n;
	case 8: /* a bogus OPT record / garbage appended */
		b[11] = 1;
		for (int i = 0; i < 20 && n < cap; i++) b[n++] = rnd();
		return n;
	default: /* header only, or empty */
		return rnd() % 13;
	}
}

static int cmd_fuzz(int count, unsigned long seed)
{
	rng = seed;
	struct sockaddr_storage ns4, ns6;
	socklen_t l4 = parse_addr("192.0.2.53", 53, &ns4);
	socklen_t l6 = parse_addr("2001:db8:53::53", 53, &ns6);
	int s4 = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	int s6 = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	if (s4 < 0 || s6 < 0) {
		printf("socket errno=%s\n", errname(errno));
		return 1;
	}
	int sent = 0, answers = 0;
	unsigned char b[1500], r[4096];
	for (int i = 0; i < count; i++) {
		int n = query(b, i % 2 ? "web.test" : "x.onion", (int[]){1, 28, 12, 15, 255}[rnd() % 5]);
		n = mutate(b, n, sizeof b);
		int v6 = i % 3 == 0;
		if (sendto(v6 ? s6 : s4, b, n, 0, (struct sockaddr *)(v6 ? &ns6 : &ns4), v6 ? l6 : l4) >= 0) sent++;
		while (recv(s4, r, sizeof r, 0) > 0) answers++;
		while (recv(s6, r, sizeof r, 0) > 0) answers++;
	}
	usleep(300000);
	while (recv(s4, r, sizeof r, 0) > 0) answers++;
	while (recv(s6, r, sizeof r, 0) > 0) answers++;
	printf("fuzz sent=%d answers=%d\n", sent, answers);
	/* Malformed DNS over TCP: huge length, short message, garbage, then close. */
	int tcp = 0;
	for (int i = 0; i < 20; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0) continue;
		struct timeval tv = {.tv_sec = 2};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		if (connect(fd, (struct sockaddr *)&ns4, l4) == 0) {
			tcp++;
			int n = query(b + 2, "web.test", 1);
			n = mutate(b + 2, n, sizeof b - 2);
			int claimed = i % 3 == 0 ? 0xffff : i % 3 == 1 ? n / 2 : n;
			b[0] = claimed >> 8; b[1] = claimed;
			if (write(fd, b, n + 2) < 0) {}
			if (i % 3 == 2) { if (read(fd, r, sizeof r) < 0) {} }
		}
		close(fd);
	}
	printf("fuzz tcp=%d\n", tcp);
	close(s4);
	close(s6);
	/* A normal lookup, and the connection it leads to, still work. */
	int fd = dial("web.test", "80", AF_UNSPEC, 0);
	if (fd >= 0) {
		printf("page=%s\n", fetch(fd, "web.test") ? "canary" : "none");
		close(fd);
	}
	fflush(stdout);
	return 7;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	alarm(50); /* bounded: a hang is a failure the test sees as SIGALRM */
	if (argc < 2) return 2;
	const char *op = argv[1];
	if (!strcmp(op, "gai") && argc >= 4) return cmd_gai(family(argv[2]), argv + 3, argc - 3);
	if (!strcmp(op, "connect") && (argc == 4 || argc == 5))
		return cmd_connect(argv[2], argv[3], argc == 5 ? family(argv[4]) : AF_UNSPEC);
	if (!strcmp(op, "rev") && argc == 4) return cmd_rev(argv[2], family(argv[3]));
	if (!strcmp(op, "revaddr") && argc == 3) return cmd_revaddr(argv[2]);
	if (!strcmp(op, "hostbyname") && argc == 3) return cmd_hostbyname(argv[2]);
	if (!strcmp(op, "resq") && argc == 4) return cmd_resq(argv[2], argv[3]);
	if (!strcmp(op, "storm") && argc == 4) return cmd_storm(atoi(argv[2]), atoi(argv[3]));
	if (!strcmp(op, "hold") && argc == 5) return cmd_hold(argv + 2);
	if (!strcmp(op, "quic") && argc == 4) return cmd_quic(argv[2], atoi(argv[3]));
	if (!strcmp(op, "fuzz") && argc == 4) return cmd_fuzz(atoi(argv[2]), strtoul(argv[3], NULL, 10));
	fprintf(stderr, "dns_probe: bad command\n");
	return 2;
}

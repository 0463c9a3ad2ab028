// sealfloor: the floor of a sealed connect, without seccomp. N sequential connects, each as
// connbench's (connect, one byte written, close) through the SOCKS server at SHOST:SPORT, in
// one of three shapes:
//   client  the program speaks SOCKS5 itself (connbench socks);
//   join    what the sealed path adds, done by the cheapest code that can do it: the upstream
//           speaks SOCKS5, the "program's" socket connects to an inner listener on loopback and
//           is accepted, and a relay thread (epoll, splice through a pipe) carries the byte and
//           the end of stream to the upstream, then closes both when the upstream ends;
//   repair  join, with the program's socket and the inner end put in ESTABLISHED by TCP_REPAIR
//           (no handshake, no accept: sequence numbers, MSS, window scale, SACK and the windows
//           set by hand, as CRIU restores a connection), which needs CAP_NET_ADMIN in the
//           namespace.
// THREADS threads (default 1) share the N connects. Prints ns_per_connect (wall time over all
// connects), conn_per_s and cpu_ns_per_connect (this process's user + system time: program and
// relay, not the SOCKS server).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "socks5.h"

#ifndef TCP_REPAIR
#define TCP_REPAIR 19
#define TCP_REPAIR_QUEUE 20
#define TCP_QUEUE_SEQ 21
#define TCP_REPAIR_OPTIONS 22
#endif
#ifndef TCP_REPAIR_OFF_NO_WP
#define TCP_REPAIR_OFF_NO_WP -1
#endif

static int ep, pipefd[2];
static struct sockaddr_in inner = {.sin_family = AF_INET};

static void die(const char *what) {
	perror(what);
	exit(1);
}

// A relayed connection: in is the inner end (the program's peer), up the upstream.
struct rconn {
	int in, up, eof;
};

// relay: the event loop. Events carry a pointer to the connection with the low bit telling
// which end (0 in, 1 up).
static void *relay(void *arg) {
	(void)arg;
	struct epoll_event ev[64];
	for (;;) {
		int n = epoll_wait(ep, ev, 64, -1);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0) die("epoll_wait");
		for (int i = 0; i < n; i++) {
			struct rconn *c = (struct rconn *)(ev[i].data.u64 & ~1ULL);
			if ((ev[i].data.u64 & 1) == 0) {
				for (;;) {
					ssize_t k = splice(c->in, NULL, pipefd[1], NULL, 1 << 16, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
					if (k > 0) {
						if (splice(pipefd[0], NULL, c->up, NULL, k, SPLICE_F_MOVE) != k) die("splice out");
						continue;
					}
					if (k == 0 && !c->eof) {
						shutdown(c->up, SHUT_WR);
						c->eof = 1;
					}
					break;
				}
			} else {
				char b[64];
				ssize_t k = read(c->up, b, sizeof b);
				if (k == 0 || (k < 0 && errno != EAGAIN)) {
					close(c->in);
					close(c->up);
					free(c);
				}
			}
		}
	}
	return NULL;
}

static int tcp_socket(void) {
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) die("socket");
	int on = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
	return fd;
}

static void sopt(int fd, int name, int v) {
	if (setsockopt(fd, IPPROTO_TCP, name, &v, sizeof v)) die("setsockopt repair");
}

// repairSeqs puts fd in repair mode with its send and receive sequence numbers.
static void repair_seqs(int fd, unsigned snd, unsigned rcv) {
	sopt(fd, TCP_REPAIR, 1);
	sopt(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
	sopt(fd, TCP_QUEUE_SEQ, snd);
	sopt(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
	sopt(fd, TCP_QUEUE_SEQ, rcv);
	sopt(fd, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
}

static void repair_done(int fd, unsigned rcv) {
	struct tcp_repair_opt o[] = {{TCPOPT_MAXSEG, 65483}, {TCPOPT_WINDOW, 7 | (7 << 16)}, {TCPOPT_SACK_PERMITTED, 0}};
	if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_OPTIONS, o, sizeof o)) die("TCP_REPAIR_OPTIONS");
	struct tcp_repair_window w = {.snd_wl1 = rcv, .snd_wnd = 65535 << 7, .max_window = 65535 << 7, .rcv_wnd = 65535 << 7, .rcv_wup = rcv};
	if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, sizeof w)) die("TCP_REPAIR_WINDOW");
	sopt(fd, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
}

// join returns the inner end of a new connection to the program's socket p.
static int join(int ln, int p, int repair) {
	if (!repair) {
		if (connect(p, (struct sockaddr *)&inner, sizeof inner)) die("connect inner");
		int in = accept4(ln, NULL, NULL, SOCK_CLOEXEC);
		if (in < 0) die("accept");
		return in;
	}
	unsigned a = random(), b = random();
	int in = tcp_socket(), on = 1;
	setsockopt(in, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
	setsockopt(in, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
	sopt(in, TCP_REPAIR, 1); // a socket in repair mode binds over established ones
	if (bind(in, (struct sockaddr *)&inner, sizeof inner)) die("bind inner");
	repair_seqs(p, a, b);
	repair_seqs(in, b, a);
	if (connect(p, (struct sockaddr *)&inner, sizeof inner)) die("repair connect p");
	struct sockaddr_in pa;
	socklen_t l = sizeof pa;
	getsockname(p, (struct sockaddr *)&pa, &l);
	if (connect(in, (struct sockaddr *)&pa, sizeof pa)) die("repair connect inner");
	repair_done(p, b);
	repair_done(in, a);
	return in;
}

// The settings of a run, set by main before the connecting threads start.
static const char *host;
static int port, shaped, repair, ln = -1;
static long per;
static struct sockaddr_in socks = {.sin_family = AF_INET};

// connects makes per connects, one after the other. (With several threads in join mode a
// thread may accept another's connection: the two are relayed crosswise, at the same cost.)
static void *connects(void *arg) {
	(void)arg;
	for (long i = 0; i < per; i++) {
		int up = tcp_socket();
		if (connect(up, (struct sockaddr *)&socks, sizeof socks)) die("connect socks");
		if (!shaped) {
			if (socks5(up, host, port)) die("socks");
			if (write(up, "x", 1) != 1) die("write");
			close(up);
			continue;
		}
		// As the supervisor does: the join while the SOCKS server answers.
		unsigned char g[3] = {5, 1, 0}, rb[512], req[300];
		if (write(up, g, 3) != 3 || readn(up, rb, 2) || rb[1] != 0) die("greeting");
		int hl = strlen(host), k = 0;
		req[k++] = 5; req[k++] = 1; req[k++] = 0; req[k++] = 3; req[k++] = hl;
		memcpy(req + k, host, hl); k += hl;
		req[k++] = port >> 8; req[k++] = port & 0xff;
		if (write(up, req, k) != k) die("request");
		int p = tcp_socket();
		struct rconn *c = malloc(sizeof *c);
		c->up = up;
		c->eof = 0;
		c->in = join(ln, p, repair);
		if (readn(up, rb, 10) || rb[1] != 0) die("reply"); // IPv4 bound address
		fcntl(c->in, F_SETFL, O_NONBLOCK);
		fcntl(c->up, F_SETFL, O_NONBLOCK);
		struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u64 = (unsigned long long)c};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, c->in, &e)) die("epoll_ctl");
		e.data.u64 |= 1;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, c->up, &e)) die("epoll_ctl");
		if (write(p, "x", 1) != 1) die("write");
		close(p);
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 7) {
		fprintf(stderr, "usage: sealfloor client|join|repair N HOST PORT SHOST SPORT [THREADS]\n");
		return 2;
	}
	const char *mode = argv[1];
	long n = atol(argv[2]);
	int threads = argc > 7 ? atoi(argv[7]) : 1;
	if (threads < 1 || threads > 256) threads = 1;
	host = argv[3];
	port = atoi(argv[4]);
	per = n / threads;
	n = per * threads;
	socks.sin_port = htons(atoi(argv[6]));
	inet_pton(AF_INET, argv[5], &socks.sin_addr);
	shaped = strcmp(mode, "client") != 0;
	repair = strcmp(mode, "repair") == 0;
	if (shaped) {
		inet_pton(AF_INET, "127.0.0.1", &inner.sin_addr);
		if (!repair) {
			ln = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (ln < 0 || bind(ln, (struct sockaddr *)&inner, sizeof inner) || listen(ln, 4096)) die("listen");
			socklen_t l = sizeof inner;
			getsockname(ln, (struct sockaddr *)&inner, &l);
		} else {
			inner.sin_port = htons(40999);
		}
		if (pipe2(pipefd, O_CLOEXEC)) die("pipe");
		ep = epoll_create1(EPOLL_CLOEXEC);
		pthread_t t;
		pthread_create(&t, NULL, relay, NULL);
	}
	struct timespec t0, t1;
	struct rusage r0, r1;
	pthread_t tid[256];
	getrusage(RUSAGE_SELF, &r0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < threads; i++) pthread_create(&tid[i], NULL, connects, NULL);
	for (int i = 0; i < threads; i++) pthread_join(tid[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	getrusage(RUSAGE_SELF, &r1);
	double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
	double cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e9 +
		     (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) * 1e3;
	printf("ns_per_connect=%.0f\ncpu_ns_per_connect=%.0f\nconn_per_s=%.0f\n", n ? ns / n : 0, n ? cpu / n : 0, n ? n / (ns / 1e9) : 0);
	return 0;
}

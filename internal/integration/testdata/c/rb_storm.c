// rb_storm IP PORT [restart]: THREADS threads each do ROUNDS blocking connects + HTTP GETs through
// torsocks while the main thread sends SIGUSR1 to them as fast as it can. Every response must be
// complete and start with "HTTP/1.0 200" (no SOCKS reply bytes in the stream, no interrupted
// connect leaking through).
// Without "restart" the handler has no SA_RESTART: connect() may fail with EINTR (retried, as
// POSIX programs must), and so may a socket() that torsocks answers itself (TCP with SealedNetwork
// 1, UDP always) when the signal comes before the supervisor received the call (retried, counted
// as socket_eintr). With "restart" (SA_RESTART, what Go, glibc's signal() and libuv use) the
// kernel restarts both: any EINTR counts as bad.
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define THREADS 4
#define ROUNDS 4
static const char *ip;
static int port;
static volatile int done;
static int good, bad, socket_eintr, restart;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void on_usr1(int sig) { (void)sig; }

static void *worker(void *arg) {
	(void)arg;
	for (int i = 0; i < ROUNDS; i++) {
		int fd;
		while ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 && errno == EINTR && !restart) {
			pthread_mutex_lock(&mu);
			socket_eintr++;
			pthread_mutex_unlock(&mu);
		}
		if (fd < 0) {
			fprintf(stderr, "socket: %s\n", strerror(errno));
			pthread_mutex_lock(&mu);
			bad++;
			pthread_mutex_unlock(&mu);
			continue;
		}
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
		inet_pton(AF_INET, ip, &sa.sin_addr);
		int r;
		do {
			r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
		} while (r < 0 && errno == EINTR && !restart);
		int ok = 0;
		if (r == 0) {
			const char *req = "GET / HTTP/1.0\r\n\r\n";
			ssize_t w;
			do { w = write(fd, req, strlen(req)); } while (w < 0 && errno == EINTR);
			char buf[4096];
			size_t n = 0;
			for (;;) {
				ssize_t k = read(fd, buf + n, sizeof buf - 1 - n);
				if (k < 0 && errno == EINTR) continue;
				if (k <= 0) break;
				n += k;
			}
			buf[n] = 0;
			ok = strncmp(buf, "HTTP/1.0 200", 12) == 0 && strstr(buf, "canary") != NULL;
			if (!ok) fprintf(stderr, "bad response (%zu bytes): %.40s\n", n, buf);
		} else {
			fprintf(stderr, "connect: %s\n", strerror(errno));
		}
		close(fd);
		pthread_mutex_lock(&mu);
		if (ok) good++; else bad++;
		pthread_mutex_unlock(&mu);
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 3) return 2;
	ip = argv[1];
	port = atoi(argv[2]);
	restart = argc > 3 && strcmp(argv[3], "restart") == 0;
	struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = restart ? SA_RESTART : 0};
	sigaction(SIGUSR1, &sa, NULL);
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, NULL);
	long sent = 0;
	for (;;) {
		pthread_mutex_lock(&mu);
		int finished = good + bad == THREADS * ROUNDS;
		pthread_mutex_unlock(&mu);
		if (finished) break;
		for (int i = 0; i < THREADS; i++)
			if (pthread_kill(t[i], SIGUSR1) == 0) sent++;
		usleep(200);
	}
	for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
	printf("RESULT good=%d bad=%d socket_eintr=%d signals=%ld\n", good, bad, socket_eintr, sent);
	return bad == 0 ? 0 : 1;
}

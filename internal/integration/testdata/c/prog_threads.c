/* prog_threads IP PORT [THREADS [EACH]]: THREADS threads (default 8) each make EACH (default 10)
 * connects, an HTTP GET on each and a getpeername. Expected under torsocks: every body is the
 * canary's, every peer IP:PORT. */
#include "bp_common.c"
#include <pthread.h>

static struct sockaddr_storage dest;
static socklen_t dlen;
static int each = 10;

static void *worker(void *arg)
{
	long bad = 0;
	char seen[80];
	(void)arg;
	for (int i = 0; i < each; i++) {
		int fd = tcp_connect(&dest, dlen);
		if (fd < 0) {
			printf("connect: %s\n", errname(errno));
			bad++;
			continue;
		}
		if (!peer_ok(fd, &dest, seen, sizeof seen)) {
			printf("peer: %s\n", seen);
			bad++;
		} else if (!http_get(fd)) {
			printf("body missing\n");
			bad++;
		}
		close(fd);
	}
	return (void *)bad;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	int n = argc > 3 ? atoi(argv[3]) : 8;
	if (argc > 4)
		each = atoi(argv[4]);
	bounded(50);
	dlen = parse_dest(argv[1], argv[2], &dest);
	pthread_t th[64];
	if (n > 64)
		n = 64;
	for (int i = 0; i < n; i++)
		pthread_create(&th[i], NULL, worker, NULL);
	long bad = 0;
	for (int i = 0; i < n; i++) {
		void *r;
		pthread_join(th[i], &r);
		bad += (long)r;
	}
	check(bad == 0, "threads=%d ok=%ld bad=%ld", n, n * each - bad, bad);
	return failures ? 1 : 0;
}

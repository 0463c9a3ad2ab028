/* bp_flip IP PORT [N]: a racing thread flips the family of the address passed to connect between
 * AF_UNIX (the bytes after it then read as an abstract socket path) and AF_INET/AF_INET6 (IP:PORT)
 * while the main thread makes N (default 300) connects on fresh TCP sockets, and a third of as
 * many on fresh unix sockets. A supervisor that decided on the address family it read (not on the
 * socket) would let the kernel run some connects that then read IP:PORT: direct connections the
 * canary sees. Connects may fail or be proxied; every proxied one must answer HTTP. */
#include "bp_common.c"
#include <pthread.h>
#include <stdatomic.h>
#include <sys/un.h>

static union {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	struct sockaddr_un un;
	struct sockaddr_storage ss;
} addr;
static socklen_t alen;
static sa_family_t inet_family;
static atomic_int stop;

static void *flipper(void *arg)
{
	(void)arg;
	volatile sa_family_t *fam = &addr.sa.sa_family;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		*fam = AF_UNIX;
		*fam = inet_family;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	int n = argc > 3 ? atoi(argv[3]) : 300;
	bounded(90);
	alen = parse_dest(argv[1], argv[2], &addr.ss);
	inet_family = addr.sa.sa_family;
	pthread_t th;
	pthread_create(&th, NULL, flipper, NULL);
	int proxied = 0, bad = 0, errs[8] = {0}, other = 0;
	for (int i = 0; i < n + n / 3; i++) {
		int unixsock = i >= n;
		int fd = socket(unixsock ? AF_UNIX : inet_family, SOCK_STREAM, 0);
		if (fd < 0) {
			printf("socket: %s\n", errname(errno));
			return 1;
		}
		int r = connect(fd, &addr.sa, alen);
		int e = errno;
		if (r == 0 && !unixsock) {
			/* Proxied: prove the connection is a real one to the canary through SOCKS. */
			proxied++;
			if (!http_get(fd))
				bad++;
		} else if (r == 0) {
			other++; /* a unix socket cannot connect to these bytes; report it */
		} else {
			switch (e) {
			case EAFNOSUPPORT: errs[0]++; break;
			case EINVAL: errs[1]++; break;
			case ENOENT: errs[2]++; break;
			case ECONNREFUSED: errs[3]++; break;
			case EPERM: errs[4]++; break;
			default:
				errs[7]++;
				printf("connect %s: %s\n", unixsock ? "unix" : "inet", errname(e));
			}
		}
		close(fd);
	}
	atomic_store(&stop, 1);
	pthread_join(th, NULL);
	printf("RESULT proxied=%d bad-body=%d unix-connected=%d EAFNOSUPPORT=%d EINVAL=%d ENOENT=%d ECONNREFUSED=%d EPERM=%d other-errors=%d\n",
	       proxied, bad, other, errs[0], errs[1], errs[2], errs[3], errs[4], errs[7]);
	return bad || other ? 1 : 0;
}

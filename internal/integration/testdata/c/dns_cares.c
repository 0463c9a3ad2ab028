/* dns_cares NAME PORT: resolve NAME with c-ares (its own resolver: /etc/resolv.conf, connected UDP
 * sockets, TCP on truncation), connect to the first address, HTTP GET.
 * Prints "cares status=S addrs=A,B", "connect=R errno=E addr=A", "page=canary|none". */
#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_storage first;
static socklen_t first_len;
static int done;

static void cb(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	char addrs[1024] = "";
	(void)arg;
	(void)timeouts;
	for (struct ares_addrinfo_node *n = res ? res->nodes : NULL; n; n = n->ai_next) {
		char a[INET6_ADDRSTRLEN] = "?";
		if (n->ai_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)n->ai_addr)->sin_addr, a, sizeof a);
		else
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)n->ai_addr)->sin6_addr, a, sizeof a);
		if (addrs[0]) strncat(addrs, ",", sizeof addrs - strlen(addrs) - 1);
		strncat(addrs, a, sizeof addrs - strlen(addrs) - 1);
		if (!first_len) {
			memcpy(&first, n->ai_addr, n->ai_addrlen);
			first_len = n->ai_addrlen;
		}
	}
	printf("cares status=%s addrs=%s\n", ares_strerror(status), addrs);
	if (res) ares_freeaddrinfo(res);
	done = 1;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	alarm(40);
	if (argc != 3) return 2;
	ares_library_init(ARES_LIB_INIT_ALL);
	ares_channel ch;
	struct ares_options opts;
	memset(&opts, 0, sizeof opts);
	opts.timeout = 2000; /* ms: a failing test ends soon */
	opts.tries = 2;
	if (ares_init_options(&ch, &opts, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) != ARES_SUCCESS) {
		printf("ares_init failed\n");
		return 1;
	}
	struct ares_addrinfo_hints hints;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	ares_getaddrinfo(ch, argv[1], argv[2], &hints, cb, NULL);
	while (!done) {
		fd_set r, w;
		FD_ZERO(&r);
		FD_ZERO(&w);
		int nfds = ares_fds(ch, &r, &w);
		if (nfds == 0) break;
		struct timeval tv, *tvp = ares_timeout(ch, NULL, &tv);
		select(nfds, &r, &w, NULL, tvp);
		ares_process(ch, &r, &w);
	}
	ares_destroy(ch);
	if (!first_len) return 0;
	int fd = socket(first.ss_family, SOCK_STREAM, 0);
	struct timeval tv = {.tv_sec = 20};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	int r = connect(fd, (struct sockaddr *)&first, first_len);
	char a[INET6_ADDRSTRLEN] = "?";
	if (first.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&first)->sin_addr, a, sizeof a);
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&first)->sin6_addr, a, sizeof a);
	printf("connect=%d errno=%d addr=%s\n", r, r < 0 ? errno : 0, a);
	if (r < 0) return 0;
	char req[512];
	int n = snprintf(req, sizeof req, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", argv[1]);
	if (write(fd, req, n) != n) return 0;
	char buf[4096];
	size_t got = 0;
	ssize_t k;
	while (got < sizeof buf - 1 && (k = read(fd, buf + got, sizeof buf - 1 - got)) > 0) got += k;
	buf[got] = 0;
	printf("page=%s\n", strstr(buf, "canary") ? "canary" : "none");
	return 0;
}

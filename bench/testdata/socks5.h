// socks5.h: the SOCKS5 exchange torsocks makes (no-auth greeting, CONNECT by name), spoken by
// the bench clients themselves on fd, already connected to the SOCKS server. 0 on success.
#include <string.h>
#include <unistd.h>

static int readn(int fd, unsigned char *b, int n) {
	int got = 0;
	while (got < n) {
		int k = read(fd, b + got, n - got);
		if (k <= 0) return -1;
		got += k;
	}
	return 0;
}

static int socks5(int fd, const char *host, int port) {
	unsigned char g[3] = {5, 1, 0}, r[512];
	if (write(fd, g, 3) != 3 || readn(fd, r, 2) || r[1] != 0) return -1;
	int hl = strlen(host), n = 0;
	unsigned char req[300];
	req[n++] = 5; req[n++] = 1; req[n++] = 0; req[n++] = 3; req[n++] = hl;
	memcpy(req + n, host, hl); n += hl;
	req[n++] = port >> 8; req[n++] = port & 0xff;
	if (write(fd, req, n) != n || readn(fd, r, 4) || r[1] != 0) return -1;
	int alen = r[3] == 1 ? 4 : r[3] == 4 ? 16 : -1;
	if (alen < 0) {
		if (readn(fd, r, 1)) return -1;
		alen = r[0];
	}
	return readn(fd, r, alen + 2);
}

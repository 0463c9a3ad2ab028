// rb_stall IP PORT: one thread asks for packet sockets in a loop (each refused with a warning line on
// torsocks' stderr, which the test never reads, so the supervisor's log write soon blocks in the
// middle of serving a call); the main thread then makes one proxied connect and prints its result.
// Under torsocks the connect must still be served: no call may keep the others waiting.
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void *refused(void *arg) {
	(void)arg;
	for (int i = 0; i < 100000; i++) {
		int fd = socket(AF_PACKET, SOCK_RAW, 0);
		if (fd >= 0) close(fd);
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc < 3) return 2;
	pthread_t t;
	pthread_create(&t, NULL, refused, NULL);
	sleep(1); // by now the refusals have filled the stderr pipe and a log write is blocked
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
	inet_pton(AF_INET, argv[1], &sa.sin_addr);
	int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	printf("RESULT connect=%d errno=%s\n", r, r ? strerror(errno) : "0");
	fflush(stdout);
	_exit(0);
}

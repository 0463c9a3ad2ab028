// rb_connect1: one blocking connect to argv[1]:argv[2]; prints "READY" first and the outcome after.
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 3) return 2;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
	inet_pton(AF_INET, argv[1], &sa.sin_addr);
	printf("READY\n");
	fflush(stdout);
	int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	printf("RESULT connect=%d errno=%s\n", r, r ? strerror(errno) : "0");
	fflush(stdout);
	return 0;
}

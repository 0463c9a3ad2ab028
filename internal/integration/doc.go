// Package integration holds the supervisor's integration tests: real programs (curl, python3, a
// static Go client, small C programs compiled by the tests) run under the torsocks binary inside a
// private network namespace, against the SOCKS5 test server, with canaries on the destination host
// that flag every connection not made by the SOCKS server.
package integration

/* SPDX-License-Identifier: MIT */
/*
 * The NBD server (nbd/) in-process, driven by libnbd and by raw sockets
 * playing hostile clients.
 */
#include "img.h"
#include "nbd/nbd_proto.h"
#include "nbd/nbd_server.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DISK_SIZE (16u << 20)
#define DATA_SIZE (1u << 20) /* the first MiB holds data, the rest is a hole */

static char dir[64];
static char sock_path[128];
static char disk_path[128];
static struct img *img;
static struct nbd_server *srv;
static pthread_t srv_thread;
static uint8_t *pattern;

static void *server_main(void *arg)
{
	nbd_server_run(arg);
	return NULL;
}

static void make_disk(void)
{
	int fd = open(disk_path, O_CREAT | O_RDWR | O_TRUNC, 0644);

	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, DISK_SIZE), 0);
	pattern = malloc(DATA_SIZE);
	for (unsigned i = 0; i < DATA_SIZE; i++)
		pattern[i] = (uint8_t)(i * 7 + i / 4096);
	cr_assert_eq(pwrite(fd, pattern, DATA_SIZE, 0), DATA_SIZE);
	close(fd);
}

static void start_server(const char *tls_cert, const char *tls_key,
			 bool read_only)
{
	struct img_open_options oo = {
		.format = "raw",
		.flags = read_only ? IMG_OPEN_RDONLY : IMG_OPEN_RDWR,
	};
	struct nbd_server_options so = { .tls_cert = tls_cert,
					 .tls_key = tls_key };
	char err[512];

	cr_assert_eq(img_open(&img, disk_path, &oo, err, sizeof(err)), 0, "%s",
		     err);
	cr_assert_eq(nbd_server_new(&srv, &so, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(nbd_server_add_export(srv, "disk", "test disk", img,
					   read_only),
		     0);
	cr_assert_eq(nbd_server_add_export(srv, "copy", NULL, img, true), 0);
	cr_assert_eq(nbd_server_add_export(srv, "disk", NULL, img, true),
		     -EEXIST);
	cr_assert_eq(nbd_server_listen_unix(srv, sock_path, err, sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(pthread_create(&srv_thread, NULL, server_main, srv), 0);
}

static void setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	strcpy(dir, "/tmp/test_nbd.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(sock_path, sizeof(sock_path), "%s/sock", dir);
	snprintf(disk_path, sizeof(disk_path), "%s/disk.raw", dir);
	make_disk();
}

static void setup_rw(void)
{
	setup();
	start_server(NULL, NULL, false);
}

static void teardown(void)
{
	char cmd[128];

	if (srv) {
		nbd_server_stop(srv);
		pthread_join(srv_thread, NULL);
		nbd_server_free(srv);
		srv = NULL;
	}
	if (img)
		cr_assert_eq(img_close(img), 0);
	img = NULL;
	free(pattern);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

static struct nbd_handle *client(const char *export)
{
	struct nbd_handle *h = nbd_create();

	cr_assert_not_null(h);
	cr_assert_eq(nbd_set_export_name(h, export), 0);
	cr_assert_eq(nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION),
		     0);
	cr_assert_eq(nbd_connect_unix(h, sock_path), 0, "%s", nbd_get_error());
	return h;
}

TestSuite(nbd, .init = setup_rw, .fini = teardown);

Test(nbd, negotiated_flags_and_sizes)
{
	struct nbd_handle *h = client("disk");

	cr_assert_eq(nbd_get_size(h), DISK_SIZE);
	cr_assert_eq(nbd_is_read_only(h), 0);
	cr_assert_eq(nbd_can_multi_conn(h), 1);
	cr_assert_eq(nbd_can_flush(h), 1);
	cr_assert_eq(nbd_can_fua(h), 1);
	cr_assert_eq(nbd_can_trim(h), 1);
	cr_assert_eq(nbd_can_zero(h), 1);
	cr_assert_eq(nbd_can_df(h), 1);
	cr_assert_eq(nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION),
		     1);
	cr_assert_eq(nbd_get_structured_replies_negotiated(h), 1);
	cr_assert_eq(nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM), 1);
	cr_assert_eq(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM),
		     NBD_SERVER_MAX_PAYLOAD);
	nbd_close(h);

	/* the empty name is the first export; "copy" is read-only */
	h = client("");
	cr_assert_eq(nbd_get_size(h), DISK_SIZE);
	nbd_close(h);
	h = client("copy");
	cr_assert_eq(nbd_is_read_only(h), 1);
	nbd_close(h);
}

Test(nbd, unknown_export_refused)
{
	struct nbd_handle *h = nbd_create();

	nbd_set_export_name(h, "nope");
	cr_assert_eq(nbd_connect_unix(h, sock_path), -1);
	nbd_close(h);
}

static int list_cb(void *opaque, const char *name, const char *description)
{
	(void)description;
	strcat(opaque, name);
	strcat(opaque, ";");
	return 0;
}

Test(nbd, list_exports)
{
	struct nbd_handle *h = nbd_create();
	char names[256] = "";

	nbd_set_opt_mode(h, true);
	cr_assert_eq(nbd_connect_unix(h, sock_path), 0);
	cr_assert_eq(nbd_opt_list(h, (nbd_list_callback){ .callback = list_cb,
							  .user_data = names }),
		     2);
	cr_assert_str_eq(names, "disk;copy;");
	nbd_opt_abort(h);
	nbd_close(h);
}

Test(nbd, read_write_round_trip_any_alignment)
{
	struct nbd_handle *h = client("disk");
	uint8_t *buf = malloc(DATA_SIZE), *back = malloc(DATA_SIZE);

	cr_assert_eq(nbd_pread(h, buf, DATA_SIZE, 0, 0), 0);
	cr_assert_eq(memcmp(buf, pattern, DATA_SIZE), 0);

	for (unsigned i = 0; i < 100003; i++)
		buf[i] = (uint8_t)(i ^ 0x5a);
	cr_assert_eq(nbd_pwrite(h, buf, 100003, 3 * DATA_SIZE + 17,
				LIBNBD_CMD_FLAG_FUA),
		     0);
	cr_assert_eq(nbd_pread(h, back, 100003, 3 * DATA_SIZE + 17, 0), 0);
	cr_assert_eq(memcmp(buf, back, 100003), 0);
	/* and it reached the image itself */
	memset(back, 0, 100003);
	cr_assert_eq(img_pread(img, back, 100003, 3 * DATA_SIZE + 17), 0);
	cr_assert_eq(memcmp(buf, back, 100003), 0);
	cr_assert_eq(nbd_flush(h, 0), 0);
	nbd_close(h);
	free(buf);
	free(back);
}

struct chunks {
	int data, hole;
	uint64_t hole_bytes;
};

static int chunk_cb(void *opaque, const void *sub, size_t count,
		    uint64_t offset, unsigned status, int *error)
{
	struct chunks *c = opaque;

	(void)sub;
	(void)offset;
	(void)error;
	if (status == LIBNBD_READ_DATA)
		c->data++;
	if (status == LIBNBD_READ_HOLE) {
		c->hole++;
		c->hole_bytes += count;
	}
	return 0;
}

Test(nbd, structured_read_sends_holes)
{
	struct nbd_handle *h = client("disk");
	uint32_t len = 4u << 20;
	uint8_t *buf = malloc(len);
	struct chunks c = { 0 };

	memset(buf, 0xff, len);
	cr_assert_eq(
		nbd_pread_structured(h, buf, len, 0,
				     (nbd_chunk_callback){ .callback = chunk_cb,
							   .user_data = &c },
				     0),
		0);
	cr_assert_eq(c.data, 1);
	cr_assert_eq(c.hole, 1);
	cr_assert_eq(c.hole_bytes, len - DATA_SIZE);
	cr_assert_eq(memcmp(buf, pattern, DATA_SIZE), 0);
	for (uint32_t i = DATA_SIZE; i < len; i++)
		cr_assert_eq(buf[i], 0);

	/* DF: one data chunk */
	c = (struct chunks){ 0 };
	cr_assert_eq(
		nbd_pread_structured(h, buf, len, 0,
				     (nbd_chunk_callback){ .callback = chunk_cb,
							   .user_data = &c },
				     LIBNBD_CMD_FLAG_DF),
		0);
	cr_assert_eq(c.data, 1);
	cr_assert_eq(c.hole, 0);
	nbd_close(h);
	free(buf);
}

struct extents {
	uint32_t e[64];
	size_t n;
};

static int extent_cb(void *opaque, const char *ctx, uint64_t offset,
		     uint32_t *entries, size_t n, int *error)
{
	struct extents *x = opaque;

	(void)offset;
	(void)error;
	cr_assert_str_eq(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION);
	for (size_t i = 0; i < n && x->n < 64; i++)
		x->e[x->n++] = entries[i];
	return 0;
}

Test(nbd, block_status_reports_data_and_holes)
{
	struct nbd_handle *h = client("disk");
	struct extents x = { 0 };

	cr_assert_eq(
		nbd_block_status(h, DISK_SIZE, 0,
				 (nbd_extent_callback){ .callback = extent_cb,
							.user_data = &x },
				 0),
		0);
	cr_assert_eq(x.n, 4);
	cr_assert_eq(x.e[0], DATA_SIZE);
	cr_assert_eq(x.e[1], 0);
	cr_assert_eq(x.e[2], DISK_SIZE - DATA_SIZE);
	cr_assert_eq(x.e[3], LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO);

	x.n = 0;
	cr_assert_eq(
		nbd_block_status(h, DISK_SIZE, 0,
				 (nbd_extent_callback){ .callback = extent_cb,
							.user_data = &x },
				 LIBNBD_CMD_FLAG_REQ_ONE),
		0);
	cr_assert_eq(x.n, 2);
	cr_assert_eq(x.e[0], DATA_SIZE);
	nbd_close(h);
}

Test(nbd, zero_and_trim)
{
	struct nbd_handle *h = client("disk");
	uint8_t buf[8192];

	cr_assert_eq(nbd_zero(h, 8192, 4096, 0), 0);
	cr_assert_eq(nbd_pread(h, buf, 8192, 4096, 0), 0);
	for (int i = 0; i < 8192; i++)
		cr_assert_eq(buf[i], 0);
	cr_assert_eq(nbd_zero(h, 4096, 65536, LIBNBD_CMD_FLAG_NO_HOLE), 0);
	cr_assert_eq(nbd_trim(h, 65536, 131072, LIBNBD_CMD_FLAG_FUA), 0);
	nbd_close(h);
}

Test(nbd, out_of_range_and_oversized_get_errors)
{
	struct nbd_handle *h = client("disk");
	uint8_t buf[4096];
	uint8_t *big = malloc(NBD_SERVER_MAX_PAYLOAD + 4096);

	/* let the requests through to the server */
	cr_assert_eq(nbd_set_strict_mode(h, 0), 0);
	cr_assert_eq(nbd_pread(h, buf, 4096, DISK_SIZE - 100, 0), -1);
	cr_assert_eq(nbd_get_errno(), EINVAL);
	cr_assert_eq(nbd_pwrite(h, buf, 4096, DISK_SIZE, 0), -1);
	cr_assert_eq(nbd_get_errno(), EINVAL);
	cr_assert_eq(nbd_zero(h, 1, UINT64_MAX - 10, 0), -1);
	cr_assert_eq(nbd_trim(h, 4096, DISK_SIZE, 0), -1);
	cr_assert_eq(nbd_pread(h, big, NBD_SERVER_MAX_PAYLOAD + 4096, 0, 0),
		     -1);
	/* still connected and serving */
	cr_assert_eq(nbd_pread(h, buf, 4096, 0, 0), 0);
	cr_assert_eq(memcmp(buf, pattern, 4096), 0);
	nbd_close(h);
	free(big);
}

Test(nbd, read_only_export_refuses_writes)
{
	struct nbd_handle *h = client("copy");
	uint8_t buf[512] = { 1 };

	cr_assert_eq(nbd_set_strict_mode(h, 0), 0);
	cr_assert_eq(nbd_pwrite(h, buf, sizeof(buf), 0, 0), -1);
	cr_assert_eq(nbd_get_errno(), EPERM);
	cr_assert_eq(nbd_pread(h, buf, sizeof(buf), 0, 0), 0);
	cr_assert_eq(memcmp(buf, pattern, sizeof(buf)), 0);
	nbd_close(h);
}

Test(nbd, many_requests_in_flight_out_of_order)
{
	struct nbd_handle *h = client("disk");
	enum { N = 64, BS = 65536 };
	uint8_t *w = malloc((size_t)N * BS), *r = malloc((size_t)N * BS);

	for (size_t i = 0; i < (size_t)N * BS; i++)
		w[i] = (uint8_t)(i * 31 + i / BS);
	for (int i = 0; i < N; i++)
		cr_assert_gt(nbd_aio_pwrite(h, w + (size_t)i * BS, BS,
					    (uint64_t)(2 * DATA_SIZE) +
						    (uint64_t)i * BS,
					    NBD_NULL_COMPLETION, 0),
			     0);
	while (nbd_aio_in_flight(h) > 0)
		cr_assert_geq(nbd_poll(h, -1), 0);
	for (int i = 0; i < N; i++)
		cr_assert_gt(nbd_aio_pread(h, r + (size_t)i * BS, BS,
					   (uint64_t)(2 * DATA_SIZE) +
						   (uint64_t)i * BS,
					   NBD_NULL_COMPLETION, 0),
			     0);
	while (nbd_aio_in_flight(h) > 0)
		cr_assert_geq(nbd_poll(h, -1), 0);
	cr_assert_eq(memcmp(w, r, (size_t)N * BS), 0);
	nbd_close(h);
	free(w);
	free(r);
}

/* ---- hostile clients on raw sockets --------------------------------- */

static int raw_connect(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct timeval tv = { .tv_sec = 10 };

	strcpy(sun.sun_path, sock_path);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void raw_write(int fd, const void *buf, size_t len)
{
	cr_assert_eq(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void raw_read(int fd, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = recv(fd, (char *)buf + done, len - done, 0);
		cr_assert_gt(n, 0, "connection closed early");
		done += (size_t)n;
	}
}

/* true when the server closed the connection */
static bool raw_closed(int fd)
{
	char c;

	return recv(fd, &c, 1, 0) == 0;
}

static void raw_greeting(int fd)
{
	uint8_t greet[18];
	uint32_t flags =
		htobe32(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);

	raw_read(fd, greet, sizeof(greet));
	cr_assert_eq(memcmp(greet, "NBDMAGICIHAVEOPT", 16), 0);
	raw_write(fd, &flags, 4);
}

static void raw_option(int fd, uint32_t option, const void *data, uint32_t len)
{
	struct nbd_option_header h = { .magic = htobe64(NBD_IHAVEOPT),
				       .option = htobe32(option),
				       .length = htobe32(len) };
	raw_write(fd, &h, sizeof(h));
	if (len)
		raw_write(fd, data, len);
}

static uint32_t raw_option_reply(int fd)
{
	struct nbd_option_reply r;
	char skip[4096];
	uint32_t len;

	raw_read(fd, &r, sizeof(r));
	cr_assert_eq(be64toh(r.magic), NBD_OPT_REPLY_MAGIC);
	len = be32toh(r.length);
	cr_assert_leq(len, sizeof(skip));
	raw_read(fd, skip, len);
	return be32toh(r.type);
}

/* handshake to transmission with NBD_OPT_EXPORT_NAME, simple replies */
static int raw_transmission(void)
{
	int fd = raw_connect();
	uint8_t info[10];

	raw_greeting(fd);
	raw_option(fd, NBD_OPT_EXPORT_NAME, "disk", 4);
	raw_read(fd, info, sizeof(info));
	cr_assert_eq(be64toh(*(uint64_t *)info), DISK_SIZE);
	return fd;
}

static void raw_request(int fd, uint16_t type, uint64_t offset, uint32_t length)
{
	struct nbd_request rq = { .magic = htobe32(NBD_REQUEST_MAGIC),
				  .type = htobe16(type),
				  .cookie = 0x1122334455667788ull,
				  .offset = htobe64(offset),
				  .length = htobe32(length) };
	raw_write(fd, &rq, sizeof(rq));
}

static uint32_t raw_simple_reply(int fd)
{
	struct nbd_simple_reply r;

	raw_read(fd, &r, sizeof(r));
	cr_assert_eq(be32toh(r.magic), NBD_SIMPLE_REPLY_MAGIC);
	cr_assert_eq(r.cookie, 0x1122334455667788ull);
	return be32toh(r.error);
}

Test(nbd, hostile_bad_option_magic_dropped)
{
	struct nbd_handle *good = client("disk");
	int fd = raw_connect();
	uint64_t junk[2] = { 0x1234, 0x5678 };
	uint8_t buf[512];

	raw_greeting(fd);
	raw_write(fd, junk, sizeof(junk));
	cr_assert(raw_closed(fd));
	close(fd);
	cr_assert_eq(nbd_pread(good, buf, sizeof(buf), 0, 0), 0);
	cr_assert_eq(memcmp(buf, pattern, sizeof(buf)), 0);
	nbd_close(good);
}

Test(nbd, hostile_unknown_client_flags_dropped)
{
	int fd = raw_connect();
	uint8_t greet[18];
	uint32_t flags = htobe32(0xff00);

	raw_read(fd, greet, sizeof(greet));
	raw_write(fd, &flags, 4);
	cr_assert(raw_closed(fd));
	close(fd);
}

Test(nbd, hostile_unknown_and_malformed_options_answered)
{
	int fd = raw_connect();
	uint8_t bad_go[8] = { 0, 0, 0x10, 0, 0, 0, 0, 0 }; /* name len 4096 */
	uint8_t *huge = calloc(1, 70000);

	raw_greeting(fd);
	raw_option(fd, 0x7777, NULL, 0);
	cr_assert_eq(raw_option_reply(fd), NBD_REP_ERR_UNSUP);
	raw_option(fd, NBD_OPT_GO, bad_go, sizeof(bad_go));
	cr_assert_eq(raw_option_reply(fd), NBD_REP_ERR_INVALID);
	raw_option(fd, NBD_OPT_LIST, "x", 1);
	cr_assert_eq(raw_option_reply(fd), NBD_REP_ERR_INVALID);
	raw_option(fd, NBD_OPT_STARTTLS, NULL, 0);
	cr_assert_eq(raw_option_reply(fd), NBD_REP_ERR_POLICY);
	raw_option(fd, NBD_OPT_SET_META_CONTEXT, NULL, 0);
	cr_assert_eq(raw_option_reply(fd), NBD_REP_ERR_INVALID);
	raw_option(fd, 0x7777, huge, 70000);
	cr_assert_eq(raw_option_reply(fd), NBD_REP_ERR_TOO_BIG);
	raw_option(fd, NBD_OPT_ABORT, NULL, 0);
	cr_assert_eq(raw_option_reply(fd), NBD_REP_ACK);
	cr_assert(raw_closed(fd));
	close(fd);
	free(huge);
}

Test(nbd, hostile_requests_get_errors_or_drop)
{
	int fd = raw_transmission();
	struct nbd_request bad = { .magic = htobe32(0xdeadbeef) };

	raw_request(fd, NBD_CMD_READ, DISK_SIZE - 1, 2);
	cr_assert_eq(raw_simple_reply(fd), NBD_EINVAL);
	raw_request(fd, NBD_CMD_READ, UINT64_MAX - 1, 4096);
	cr_assert_eq(raw_simple_reply(fd), NBD_EINVAL);
	raw_request(fd, 99, 0, 0);
	cr_assert_eq(raw_simple_reply(fd), NBD_EINVAL);
	/* block status without a negotiated meta context */
	raw_request(fd, NBD_CMD_BLOCK_STATUS, 0, 4096);
	cr_assert_eq(raw_simple_reply(fd), NBD_EINVAL);
	/* an out-of-range write's payload is consumed, then refused */
	raw_request(fd, NBD_CMD_WRITE, DISK_SIZE - 10, 100);
	raw_write(fd, (uint8_t[100]){ 0 }, 100);
	cr_assert_eq(raw_simple_reply(fd), NBD_EINVAL);
	raw_request(fd, NBD_CMD_FLUSH, 0, 0);
	cr_assert_eq(raw_simple_reply(fd), 0);
	/* a bad request magic ends the client */
	raw_write(fd, &bad, sizeof(bad));
	cr_assert(raw_closed(fd));
	close(fd);

	/* an oversized write cannot be skipped: dropped */
	fd = raw_transmission();
	raw_request(fd, NBD_CMD_WRITE, 0, NBD_SERVER_MAX_PAYLOAD + 1);
	cr_assert(raw_closed(fd));
	close(fd);
}

Test(nbd, disconnect_mid_write_loses_nothing_acknowledged)
{
	struct nbd_handle *good = client("disk");
	uint8_t buf[65536], ones[1000];
	int fd = raw_transmission();

	/* one acknowledged write, then a write cut short */
	memset(ones, 1, sizeof(ones));
	raw_request(fd, NBD_CMD_WRITE, 200000, sizeof(ones));
	raw_write(fd, ones, sizeof(ones));
	cr_assert_eq(raw_simple_reply(fd), 0);
	raw_request(fd, NBD_CMD_WRITE, 0, sizeof(buf));
	raw_write(fd, ones, sizeof(ones));
	close(fd);

	cr_assert_eq(nbd_pread(good, buf, sizeof(buf), 0, 0), 0);
	cr_assert_eq(memcmp(buf, pattern, sizeof(buf)), 0);
	cr_assert_eq(nbd_pread(good, buf, sizeof(ones), 200000, 0), 0);
	cr_assert_eq(memcmp(buf, ones, sizeof(ones)), 0);
	nbd_close(good);
}

Test(nbd, max_clients_refuses_extra)
{
	struct nbd_server *limited;
	struct nbd_server_options so = { .max_clients = 1 };
	char err[256], path[160];
	pthread_t t;

	snprintf(path, sizeof(path), "%s/limited", dir);
	cr_assert_eq(nbd_server_new(&limited, &so, err, sizeof(err)), 0);
	cr_assert_eq(nbd_server_add_export(limited, "d", NULL, img, true), 0);
	cr_assert_eq(nbd_server_listen_unix(limited, path, err, sizeof(err)),
		     0);
	cr_assert_eq(pthread_create(&t, NULL, server_main, limited), 0);
	struct nbd_handle *a = nbd_create(), *b = nbd_create();
	cr_assert_eq(nbd_connect_unix(a, path), 0);
	cr_assert_eq(nbd_connect_unix(b, path), -1);
	nbd_close(a);
	nbd_close(b);
	nbd_server_stop(limited);
	pthread_join(t, NULL);
	nbd_server_free(limited);
	struct stat st;
	cr_assert_eq(stat(path, &st), -1); /* socket removed */
}

/* ---- TLS -------------------------------------------------------------*/

static void setup_tls(void)
{
	char cmd[512], cert[160], key[160];

	setup();
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey rsa:2048 -nodes -days 2 "
		 "-subj /CN=localhost -keyout %s/server-key.pem "
		 "-out %s/ca-cert.pem 2>/dev/null",
		 dir, dir);
	cr_assert_eq(system(cmd), 0);
	snprintf(cert, sizeof(cert), "%s/ca-cert.pem", dir);
	snprintf(key, sizeof(key), "%s/server-key.pem", dir);
	start_server(cert, key, false);
}

Test(nbd_tls, tls_required_and_works, .init = setup_tls, .fini = teardown)
{
	struct nbd_handle *h = nbd_create();
	uint8_t buf[4096];

	/* a client without TLS gets nowhere */
	cr_assert_eq(nbd_set_export_name(h, "disk"), 0);
	cr_assert_eq(nbd_connect_unix(h, sock_path), -1);
	nbd_close(h);

	h = nbd_create();
	cr_assert_eq(nbd_set_export_name(h, "disk"), 0);
	cr_assert_eq(nbd_set_tls(h, LIBNBD_TLS_REQUIRE), 0);
	cr_assert_eq(nbd_set_tls_certificates(h, dir), 0);
	cr_assert_eq(nbd_set_tls_verify_peer(h, false), 0);
	cr_assert_eq(nbd_connect_unix(h, sock_path), 0, "%s", nbd_get_error());
	cr_assert_eq(nbd_get_tls_negotiated(h), 1);
	cr_assert_eq(nbd_pread(h, buf, sizeof(buf), 0, 0), 0);
	cr_assert_eq(memcmp(buf, pattern, sizeof(buf)), 0);
	memset(buf, 9, sizeof(buf));
	cr_assert_eq(nbd_pwrite(h, buf, sizeof(buf), 8192, 0), 0);
	cr_assert_eq(nbd_pread(h, buf, sizeof(buf), 8192, 0), 0);
	cr_assert_eq(buf[4095], 9);
	nbd_close(h);
}

Test(nbd, stop_with_idle_and_half_open_clients_returns)
{
	struct nbd_handle *idle = client("disk");
	int half = raw_connect(); /* never answers the greeting */
	uint8_t greeting[18];
	struct timespec t0, t1;

	raw_read(half, greeting, sizeof(greeting)); /* accepted by now */

	clock_gettime(CLOCK_MONOTONIC, &t0);
	nbd_server_stop(srv);
	pthread_join(srv_thread, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	cr_assert_lt(t1.tv_sec - t0.tv_sec, 5);
	nbd_server_free(srv);
	srv = NULL;
	cr_assert(raw_closed(half));
	close(half);
	/* the idle client finds the server gone */
	uint8_t buf[512];
	cr_assert_eq(nbd_pread(idle, buf, sizeof(buf), 0, 0), -1);
	nbd_close(idle);
}

/* Each dynamic format behind the server: writes land, holes show, data
 * persists after the server and the image are closed. */
static void serve_format(const char *fmt)
{
	/* blocks of 1 MiB in every format, so that the hole before the data
	 * is a whole block */
	struct img_create_options co = { .format = fmt,
					 .size = DISK_SIZE,
					 .cluster_size = DATA_SIZE };
	struct img_open_options oo = { .format = fmt, .flags = IMG_OPEN_RDWR };
	char err[512], path[160], sock[160];
	struct nbd_server *s;
	struct img *im;
	pthread_t t;
	struct extents x = { 0 };
	uint8_t *buf = malloc(DATA_SIZE);

	snprintf(path, sizeof(path), "%s/disk.%s", dir, fmt);
	snprintf(sock, sizeof(sock), "%s/%s.sock", dir, fmt);
	cr_assert_eq(img_create(path, &co, err, sizeof(err)), 0, "%s: %s", fmt,
		     err);
	cr_assert_eq(img_open(&im, path, &oo, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(nbd_server_new(&s, NULL, err, sizeof(err)), 0);
	cr_assert_eq(nbd_server_add_export(s, fmt, NULL, im, false), 0);
	cr_assert_eq(nbd_server_listen_unix(s, sock, err, sizeof(err)), 0);
	cr_assert_eq(pthread_create(&t, NULL, server_main, s), 0);

	struct nbd_handle *h = nbd_create();
	nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION);
	cr_assert_eq(nbd_connect_unix(h, sock), 0, "%s", nbd_get_error());
	cr_assert_eq(nbd_get_size(h), DISK_SIZE);
	cr_assert_eq(nbd_pwrite(h, pattern, DATA_SIZE, 4 * DATA_SIZE, 0), 0);
	cr_assert_eq(nbd_flush(h, 0), 0);
	cr_assert_eq(
		nbd_block_status(h, DISK_SIZE, 0,
				 (nbd_extent_callback){ .callback = extent_cb,
							.user_data = &x },
				 0),
		0);
	cr_assert_geq(x.n, 4, "%s: hole, data, hole expected", fmt);
	cr_assert_eq(x.e[1] & LIBNBD_STATE_HOLE, LIBNBD_STATE_HOLE, "%s", fmt);
	nbd_close(h);
	nbd_server_stop(s);
	pthread_join(t, NULL);
	nbd_server_free(s);
	cr_assert_eq(img_close(im), 0);

	cr_assert_eq(img_open(&im, path, &oo, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(img_pread(im, buf, DATA_SIZE, 4 * DATA_SIZE), 0);
	cr_assert_eq(memcmp(buf, pattern, DATA_SIZE), 0, "%s", fmt);
	cr_assert_eq(img_close(im), 0);
	free(buf);
}

Test(nbd, every_dynamic_format_through_the_server)
{
	int n = 0;

	for (const char *const *f = img_formats(); *f; f++)
		if (strcmp(*f, "raw")) {
			serve_format(*f);
			n++;
		}
	cr_assert_gt(n, 0, "no dynamic format in this build");
}

/* Random option and request frames: every client ends up answered or
 * dropped, the server survives and the data is intact. */
Test(nbd, random_frames_never_hurt_the_server)
{
	unsigned seed = 12345;
	uint8_t buf[4096];

	for (int round = 0; round < 60; round++) {
		int fd = raw_connect();
		uint8_t junk[600];
		struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };

		raw_greeting(fd);
		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)rand_r(&seed);
		if (round % 3 == 0) {
			/* option frames with random codes and lengths */
			uint32_t len = (uint32_t)(rand_r(&seed) % 200);
			raw_option(fd, (uint32_t)rand_r(&seed) % 16, junk, len);
		} else if (round % 3 == 1) {
			/* a GO/INFO/META with random payload */
			uint32_t opts[] = { NBD_OPT_GO, NBD_OPT_INFO,
					    NBD_OPT_LIST_META_CONTEXT };
			raw_option(fd, opts[rand_r(&seed) % 3], junk,
				   (uint32_t)(rand_r(&seed) % 64));
		} else {
			/* into transmission, then requests with random
			 * types, flags, offsets and lengths (no payloads) */
			uint8_t info[10];
			raw_option(fd, NBD_OPT_EXPORT_NAME, "disk", 4);
			raw_read(fd, info, sizeof(info));
			for (int k = 0; k < 8; k++) {
				struct nbd_request rq = {
					.magic = htobe32(NBD_REQUEST_MAGIC),
					.flags = htobe16(
						(uint16_t)rand_r(&seed)),
					.type = htobe16((
						uint16_t)(rand_r(&seed) % 10 == 1
								  ? 0
								  : rand_r(&seed) %
									    10)),
					.offset = htobe64(
						(uint64_t)rand_r(&seed) *
						(uint64_t)rand_r(&seed)),
					.length = htobe32(
						(uint32_t)rand_r(&seed) % 8192),
				};
				send(fd, &rq, sizeof(rq), MSG_NOSIGNAL);
			}
		}
		/* drain whatever comes back until the server is quiet */
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		while (recv(fd, junk, sizeof(junk), 0) > 0)
			;
		close(fd);
	}
	struct nbd_handle *h = client("disk");
	cr_assert_eq(nbd_pread(h, buf, sizeof(buf), 0, 0), 0);
	cr_assert_eq(memcmp(buf, pattern, sizeof(buf)), 0);
	nbd_close(h);
}

/* SPDX-License-Identifier: MIT */
/*
 * imgvm's control protocol and VM definitions: the request parser and the
 * definition parser under hostile input, the option <-> argv mapping, the
 * atomic definition writes, the server under hostile clients (10 MiB
 * lines, 100 clients, one that never reads), and the CD-ROM's media
 * change as the guest sees it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vmm/control.h"
#include "vmm/devices/vga.h"
#include "vmm/display/display.h"
#include "vmm/devices/ata.h"
#include "vmm/options.h"
#include "vmm/pc.h"
#include "vmm/vmdef.h"
#include "vmm_test_util.h"

static char err[512];

static int parse(const char *text, struct control_request *req)
{
	return control_parse_request(text, strlen(text), req, err, sizeof(err));
}

/* ---- the request parser ------------------------------------------------*/

Test(request, every_command_parses)
{
	struct control_request req;

	for (unsigned c = CONTROL_STATUS; c <= CONTROL_SENDKEYS; c++) {
		char line[128];
		const char *arg = c == CONTROL_INSERT || c == CONTROL_SCREENSHOT
					  ? ",\"path\":\"/tmp/x\""
				  : c == CONTROL_SENDKEYS
					  ? ",\"text\":\"ls\\n\""
					  : "";

		snprintf(line, sizeof(line), "{\"command\":\"%s\"%s}",
			 control_command_names[c], arg);
		cr_assert_eq(parse(line, &req), 0, "%s: %s", line, err);
		cr_assert_eq(req.command, c);
		if (c == CONTROL_SENDKEYS)
			cr_assert_str_eq(req.argument, "ls\n");
		else if (*arg)
			cr_assert_str_eq(req.argument, "/tmp/x");
		else
			cr_assert_null(req.argument);
		control_request_free(&req);
	}
}

Test(request, hostile_lines_are_refused_with_a_reason)
{
	static const struct {
		const char *line, *why;
	} bad[] = {
		{ "", "not JSON" },
		{ "{\"command\":\"sta", "truncated" },
		{ "{\"command\":\"status\"", "truncated" },
		{ "[\"status\"]", "object" },
		{ "\"status\"", "object" },
		{ "{}", "object" },
		{ "{\"command\":7}", "object" },
		{ "{\"command\":\"format-disk\"}", "unknown command" },
		{ "{\"command\":\"status\",\"x\":1}", "unknown field" },
		{ "{\"command\":\"insert\"}", "needs a \"path\"" },
		{ "{\"command\":\"insert\",\"path\":\"\"}",
		  "needs a \"path\"" },
		{ "{\"command\":\"insert\",\"path\":5}", "needs a \"path\"" },
		{ "{\"command\":\"insert\",\"path\":\"a\\u0000b\"}", "NUL" },
		{ "{\"command\":\"status\"} {\"command\":\"stop\"}", "after" },
		{ "{\"command\":\"status\"}x", "after" },
	};
	struct control_request req;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		cr_assert_neq(parse(bad[i].line, &req), 0, "accepted: %s",
			      bad[i].line);
		cr_assert_not_null(strstr(err, bad[i].why),
				   "'%s': error '%s' lacks '%s'", bad[i].line,
				   err, bad[i].why);
		cr_assert_null(req.argument);
	}
}

Test(request, nesting_and_size_limits)
{
	struct control_request req;
	size_t big = 10u << 20;
	char *line = malloc(big + 1);

	cr_assert_not_null(line);
	/* 10 MiB: refused before parsing */
	memset(line, ' ', big);
	memcpy(line, "{\"command\":\"status\"}", 20);
	cr_assert_eq(control_parse_request(line, big, &req, err, sizeof(err)),
		     -E2BIG);
	/* 10000 nested arrays inside the limit of one line: the tokenizer's
	 * depth limit, not the stack, stops it */
	memset(line, '[', 10000);
	cr_assert_neq(
		control_parse_request(line, 10000, &req, err, sizeof(err)), 0);
	/* a NUL byte inside the line */
	memcpy(line, "{\"command\":\"status\"}\0", 21);
	cr_assert_neq(control_parse_request(line, 21, &req, err, sizeof(err)),
		      0);
	cr_assert_not_null(strstr(err, "NUL"));
	free(line);
}

/* ---- names and the definition parser -----------------------------------*/

Test(vmdef, names)
{
	static const char *good[] = { "lab", "Lab-2", "a.b_c", "x" };
	static const char *bad[] = { "",    "../x", "a/b", ".hidden", "-x",
				     "a b", "a\nb", "ü",   "lab/" };
	char long_name[VMDEF_NAME_MAX + 2];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		cr_assert_eq(vmdef_check_name(good[i], err, sizeof(err)), 0,
			     "%s", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(vmdef_check_name(bad[i], err, sizeof(err)),
			     -EINVAL, "'%s' accepted", bad[i]);
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = 0;
	cr_assert_eq(vmdef_check_name(long_name, err, sizeof(err)), -EINVAL);
	long_name[VMDEF_NAME_MAX] = 0;
	cr_assert_eq(vmdef_check_name(long_name, err, sizeof(err)), 0);
}

static int parse_def(const char *text, json_object **opts)
{
	return vmdef_parse(text, strlen(text), "lab", opts, err, sizeof(err));
}

Test(vmdef, parses_a_definition)
{
	json_object *opts;

	cr_assert_eq(parse_def("{\"imgvm-vm\":1,\"name\":\"lab\",\"options\":"
			       "{\"memory\":\"2G\",\"disk\":[\"/a.vdi\","
			       "\"/b.vmdk,readonly\"],\"no-reboot\":true}}",
			       &opts),
		     0, "%s", err);
	cr_assert_str_eq(
		json_object_get_string(json_object_object_get(opts, "memory")),
		"2G");
	json_object_put(opts);
}

Test(vmdef, hostile_definitions_are_refused)
{
	static const struct {
		const char *text, *why;
	} bad[] = {
		{ "", "not JSON" },
		{ "{\"imgvm-vm\":1,\"name\":\"lab\",\"options\":{",
		  "truncated" },
		{ "[]", "not an imgvm" },
		{ "{\"name\":\"lab\",\"options\":{}}", "not an imgvm" },
		{ "{\"imgvm-vm\":2,\"name\":\"lab\",\"options\":{}}",
		  "not an imgvm" },
		{ "{\"imgvm-vm\":1,\"options\":{}}", "name" },
		{ "{\"imgvm-vm\":1,\"name\":\"../etc\",\"options\":{}}",
		  "not a VM name" },
		{ "{\"imgvm-vm\":1,\"name\":\"other\",\"options\":{}}",
		  "another VM" },
		{ "{\"imgvm-vm\":1,\"name\":\"lab\"}", "options" },
		{ "{\"imgvm-vm\":1,\"name\":\"lab\",\"options\":[]}",
		  "options" },
		{ "{\"imgvm-vm\":1,\"name\":\"lab\",\"options\":{\"rm-rf\":"
		  "\"/\"}}",
		  "unknown option" },
		{ "{\"imgvm-vm\":1,\"name\":\"lab\",\"options\":{\"memory\":2}}",
		  "must be a string" },
		{ "{\"imgvm-vm\":1,\"name\":\"lab\",\"options\":{\"cdrom\":[\"a"
		  "\"]}}",
		  "must be a string" },
		{ "{\"imgvm-vm\":1,\"name\":\"lab\",\"options\":{\"disk\":[1]}}",
		  "every entry" },
		{ "{\"imgvm-vm\":1,\"name\":\"lab\",\"options\":{\"no-reboot\":"
		  "\"yes\"}}",
		  "true or false" },
		{ "{\"imgvm-vm\":1,\"name\":\"lab\",\"options\":{}} trailing",
		  "after" },
	};
	json_object *opts;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_neq(parse_def(bad[i].text, &opts), 0, "accepted: %s",
			      bad[i].text);
		cr_assert_null(opts);
		cr_assert_not_null(strstr(err, bad[i].why),
				   "'%s': error '%s' lacks '%s'", bad[i].text,
				   err, bad[i].why);
	}
}

Test(vmdef, oversized_definition)
{
	size_t big = VMDEF_SIZE_MAX + 1;
	char *text = malloc(big);
	json_object *opts;

	memset(text, ' ', big);
	cr_assert_eq(vmdef_parse(text, big, NULL, &opts, err, sizeof(err)),
		     -EFBIG);
	free(text);
}

/* ---- options <-> argv --------------------------------------------------*/

static json_object *apply(json_object *opts, const char *const *args, int nargs,
			  int *ret)
{
	*ret = vmdef_apply_args(opts, nargs, (char **)args, "lab", NULL, NULL,
				err, sizeof(err));
	return opts;
}

static char *joined_argv(json_object *opts)
{
	static char buf[4096];
	char **argv;
	int argc;
	size_t n = 0;

	cr_assert_eq(vmdef_to_argv(opts, &argc, &argv), 0);
	buf[0] = 0;
	for (int i = 0; i < argc; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s",
				      i ? " " : "", argv[i]);
	vmdef_free_argv(argc, argv);
	return buf;
}

Test(vmdef, create_and_modify_map_to_boot_argv)
{
	const char *create[] = { "--memory",	     "2G",
				 "--disk",	     "/d/a.vdi",
				 "--disk=/d/b.vmdk", "--cdrom",
				 "/i.iso",	     "--no-reboot" };
	const char *modify[] = { "--cdrom", "none", "--disk",  "/d/c.vhd",
				 "--cpus",  "2",    "--unset", "no-reboot" };
	json_object *opts = json_object_new_object();
	struct boot_options bo;
	char **argv;
	int argc, ret;

	apply(opts, create, 8, &ret);
	cr_assert_eq(ret, 0, "%s", err);
	cr_assert_str_eq(joined_argv(opts),
			 "boot --memory 2G --disk /d/a.vdi --disk /d/b.vmdk "
			 "--cdrom /i.iso --no-reboot");
	/* the same parser as boot accepts it */
	cr_assert_eq(vmdef_to_argv(opts, &argc, &argv), 0);
	cr_assert_eq(boot_options_parse(argc, argv, &bo), 0);
	cr_assert_eq(bo.memory, 2ull << 30);
	cr_assert_eq(bo.ndisks, 2);
	cr_assert(bo.no_reboot);
	vmdef_free_argv(argc, argv);

	/* a repeatable option given again replaces the list */
	apply(opts, modify, 8, &ret);
	cr_assert_eq(ret, 0, "%s", err);
	cr_assert_str_eq(joined_argv(opts),
			 "boot --memory 2G --disk /d/c.vhd --cpus 2");
	json_object_put(opts);
}

Test(vmdef, relative_paths_become_absolute)
{
	const char *args[] = { "--cdrom", "x.iso", "--disk", "d.vdi,readonly" };
	json_object *opts = json_object_new_object();
	char cwd[PATH_MAX], want[PATH_MAX * 2 + 64];
	int ret;

	cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
	apply(opts, args, 4, &ret);
	cr_assert_eq(ret, 0);
	snprintf(want, sizeof(want),
		 "boot --cdrom %s/x.iso --disk %s/d.vdi,readonly", cwd, cwd);
	cr_assert_str_eq(joined_argv(opts), want);
	json_object_put(opts);
}

Test(vmdef, bad_arguments)
{
	static const char *const cases[][2] = {
		{ "--frobnicate", NULL }, { "memory", "2G" },
		{ "--memory", NULL },	  { "--no-reboot=1", NULL },
		{ "--unset", "bogus" },	  { "--disk", "new:vdi:1G" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_object *opts = json_object_new_object();
		int ret;

		apply(opts, cases[i], cases[i][1] ? 2 : 1, &ret);
		cr_assert_neq(ret, 0, "accepted %s", cases[i][0]);
		cr_assert(err[0]);
		json_object_put(opts);
	}
}

/* ---- files: atomic replace ---------------------------------------------*/

Test(vmdef, save_replaces_atomically)
{
	char home[] = "/tmp/test_vmm_control.XXXXXX", path[PATH_MAX];
	const char *args[] = { "--memory", "1G" };
	json_object *opts = json_object_new_object(), *back;
	struct stat before, after;
	int ret;

	cr_assert_not_null(mkdtemp(home));
	setenv("IMGVM_HOME", home, 1);
	snprintf(path, sizeof(path), "%s/lab", home);
	cr_assert_eq(mkdir(path, 0700), 0);
	apply(opts, args, 2, &ret);
	cr_assert_eq(vmdef_save("lab", opts, err, sizeof(err)), 0, "%s", err);
	snprintf(path, sizeof(path), "%s/lab/vm.json", home);
	cr_assert_eq(stat(path, &before), 0);
	json_object_object_add(opts, "cpus", json_object_new_string("4"));
	cr_assert_eq(vmdef_save("lab", opts, err, sizeof(err)), 0);
	cr_assert_eq(stat(path, &after), 0);
	/* a new file renamed over the old one, never rewritten in place */
	cr_assert_neq(before.st_ino, after.st_ino);
	cr_assert_eq(vmdef_load("lab", &back, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(
		json_object_get_string(json_object_object_get(back, "cpus")),
		"4");
	json_object_put(back);
	/* no temporary file is left behind */
	snprintf(path, sizeof(path),
		 "ls -A %s/lab | grep -v '^vm.json$' | wc -l", home);
	{
		FILE *p = popen(path, "r");
		int n = -1;

		cr_assert_eq(fscanf(p, "%d", &n), 1);
		pclose(p);
		cr_assert_eq(n, 0);
	}
	/* a damaged file is refused with its name */
	snprintf(path, sizeof(path), "%s/lab/vm.json", home);
	{
		FILE *f = fopen(path, "w");

		fputs("{\"imgvm-vm\":1,\"name\":\"lab\",\"opt", f);
		fclose(f);
	}
	cr_assert_neq(vmdef_load("lab", &back, err, sizeof(err)), 0);
	cr_assert_not_null(strstr(err, "vm.json"));
	cr_assert_eq(vmdef_load("nope", &back, err, sizeof(err)), -ENOENT);
	json_object_put(opts);
	snprintf(path, sizeof(path), "rm -rf %s", home);
	cr_assert_eq(system(path), 0);
}

/* ---- the server --------------------------------------------------------*/

static struct pc fake_pc;
static struct control *server;
static char sock_path[108];
static char sock_dir[] = "/tmp/test_vmm_ctl.XXXXXX";

static void server_up(void)
{
	char e[256];

	memset(&fake_pc, 0, sizeof(fake_pc));
	fake_pc.opt.cpus = 2;
	fake_pc.opt.memory = 512ull << 20;
	strcpy(sock_dir, "/tmp/test_vmm_ctl.XXXXXX");
	cr_assert_not_null(mkdtemp(sock_dir));
	snprintf(sock_path, sizeof(sock_path), "%s/control.sock", sock_dir);
	server = control_start(sock_path, &fake_pc, e, sizeof(e));
	cr_assert_not_null(server, "%s", e);
}

static void server_down(void)
{
	control_stop(server);
	cr_assert_eq(access(sock_path, F_OK), -1, "socket removed");
	rmdir(sock_dir);
}

static int connect_client(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(addr.sun_path, sock_path);
	cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	return fd;
}

/* one reply line, waiting at most 10 s */
static char *read_reply(int fd)
{
	static char buf[65536];
	size_t got = 0;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 10000) != 1)
			return NULL;
		n = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (n <= 0)
			return NULL;
		got += (size_t)n;
		buf[got] = 0;
		if (strchr(buf, '\n'))
			return buf;
	}
}

static char *call(const char *request)
{
	static char *reply;
	char e[256];

	free(reply);
	reply = NULL;
	cr_assert_eq(control_call(sock_path, request, &reply, e, sizeof(e)), 0,
		     "%s", e);
	return reply;
}

TestSuite(server, .init = server_up, .fini = server_down, .timeout = 60);

Test(server, status_and_commands)
{
	struct stat st;
	char *r;

	cr_assert_eq(stat(sock_path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	r = call("{\"command\":\"status\"}");
	cr_assert_not_null(strstr(r, "\"ok\":true"), "%s", r);
	cr_assert_not_null(strstr(r, "\"vcpus\":2"), "%s", r);
	cr_assert_not_null(strstr(r, "\"state\":\"running\""), "%s", r);
	cr_assert_not_null(strstr(r, "\"cdrom\":null"), "%s", r);
	r = call("{\"command\":\"eject\"}");
	cr_assert_not_null(strstr(r, "no CD-ROM drive"), "%s", r);
	r = call("{\"command\":\"powerbutton\"}");
	cr_assert_not_null(strstr(r, "\"guest_listening\":false"), "%s", r);
	r = call("{\"command\":\"screenshot\",\"path\":\"/tmp/s.png\"}");
	cr_assert_not_null(strstr(r, "no display"), "%s", r);
	r = call("{\"command\":\"frobnicate\"}");
	cr_assert_not_null(strstr(r, "unknown command"), "%s", r);
	r = call("{\"command\":");
	cr_assert_not_null(strstr(r, "truncated"), "%s", r);
}

Test(server, several_requests_on_one_connection)
{
	int fd = connect_client();
	const char req[] = "{\"command\":\"status\"}\n\n{\"command\":\"bad\"}\n"
			   "{\"command\":\"status\"}\n";
	char all[8192] = "";
	size_t got = 0;

	cr_assert_eq(write(fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
	/* three replies (the empty line is skipped) */
	while (got < sizeof(all) - 1) {
		char *nl1, *nl2, *nl3;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		cr_assert_eq(poll(&p, 1, 10000), 1);
		n = read(fd, all + got, sizeof(all) - 1 - got);
		cr_assert_gt(n, 0);
		got += (size_t)n;
		all[got] = 0;
		if ((nl1 = strchr(all, '\n')) &&
		    (nl2 = strchr(nl1 + 1, '\n')) &&
		    (nl3 = strchr(nl2 + 1, '\n')))
			break;
	}
	cr_assert_not_null(strstr(all, "unknown command"), "%s", all);
	cr_assert_eq(strstr(strstr(all, "unknown command"), "\"vcpus\":2") !=
			     NULL,
		     true, "%s", all);
	close(fd);
}

struct writer {
	int fd;
	size_t bytes;
};

static void *write_all(void *opaque)
{
	struct writer *w = opaque;
	char *chunk = malloc(65536);
	size_t done = 0;

	memset(chunk, 'x', 65536);
	while (done < w->bytes) {
		ssize_t n = send(w->fd, chunk, 65536, MSG_NOSIGNAL);

		if (n <= 0)
			break; /* the server cut us off: expected */
		done += (size_t)n;
	}
	free(chunk);
	return NULL;
}

Test(server, ten_mib_line_gets_an_error_and_the_server_goes_on)
{
	struct writer w = { .fd = connect_client(), .bytes = 10u << 20 };
	pthread_t t;
	char *r;

	pthread_create(&t, NULL, write_all, &w);
	r = read_reply(w.fd);
	cr_assert_not_null(r);
	cr_assert_not_null(strstr(r, "longer than"), "%s", r);
	pthread_join(t, NULL);
	close(w.fd);
	r = call("{\"command\":\"status\"}");
	cr_assert_not_null(strstr(r, "\"ok\":true"), "%s", r);
}

Test(server, hundred_clients_connecting_and_leaving)
{
	int fds[100];
	unsigned replies = 0, busy = 0;

	/* one after the other, some leaving mid-request */
	for (int i = 0; i < 100; i++) {
		int fd = connect_client();

		if (i % 3 == 0)
			cr_assert_eq(write(fd, "{\"comm", 6), 6);
		close(fd);
	}
	/* all at once: more than the server keeps (64); the others get
	 * "too many" and are closed, the rest are served */
	for (int i = 0; i < 100; i++)
		fds[i] = connect_client();
	usleep(200000);
	for (int i = 0; i < 100; i++) {
		char *r;

		if (send(fds[i], "{\"command\":\"status\"}\n", 21,
			 MSG_NOSIGNAL) != 21) {
			busy++;
			continue;
		}
		r = read_reply(fds[i]);
		if (r && strstr(r, "\"ok\":true"))
			replies++;
		else if (r && strstr(r, "too many"))
			busy++;
	}
	for (int i = 0; i < 100; i++)
		close(fds[i]);
	cr_assert_eq(replies + busy, 100, "%u served, %u turned away", replies,
		     busy);
	cr_assert_geq(replies, CONTROL_CLIENTS_MAX - 1);
	usleep(200000);
	cr_assert_not_null(
		strstr(call("{\"command\":\"status\"}"), "\"ok\":true"));
}

static void *flood_without_reading(void *opaque)
{
	struct writer *w = opaque;
	static const char req[] = "{\"command\":\"status\"}\n";
	char buf[4096];
	size_t n = 0;

	while (n + sizeof(req) < sizeof(buf)) {
		memcpy(buf + n, req, sizeof(req) - 1);
		n += sizeof(req) - 1;
	}
	for (size_t sent = 0; sent < w->bytes;) {
		ssize_t k = send(w->fd, buf, n, MSG_NOSIGNAL);

		if (k <= 0)
			break;
		sent += (size_t)k;
	}
	return NULL;
}

Test(server, a_client_that_never_reads_is_cut_off_alone)
{
	struct writer w = { .fd = connect_client(), .bytes = 64u << 20 };
	pthread_t t;
	char buf[65536];
	ssize_t n;
	size_t total = 0;
	bool closed = false;

	pthread_create(&t, NULL, flood_without_reading, &w);
	/* others are served meanwhile */
	for (int i = 0; i < 20; i++)
		cr_assert_not_null(strstr(call("{\"command\":\"status\"}"),
					  "\"ok\":true"));
	pthread_join(t, NULL);
	/* the server has closed it: what it had queued, then end of file */
	for (int i = 0; i < 10000; i++) {
		struct pollfd p = { .fd = w.fd, .events = POLLIN };

		if (poll(&p, 1, 10000) != 1)
			break;
		n = read(w.fd, buf, sizeof(buf));
		if (n <= 0) {
			closed = true;
			break;
		}
		total += (size_t)n;
	}
	cr_assert(closed, "the flooding client is disconnected");
	cr_assert_leq(total, 2 * CONTROL_PENDING_MAX + sizeof(buf));
	close(w.fd);
	cr_assert_not_null(
		strstr(call("{\"command\":\"status\"}"), "\"ok\":true"));
}

Test(server, an_old_socket_is_replaced_other_files_are_not)
{
	char e[256], other[160];
	struct control *second;
	int fd;

	/* a second server on a socket path in use: the socket file is
	 * replaced (an imgvm that died leaves one) */
	snprintf(other, sizeof(other), "%s/plain", sock_dir);
	fd = open(other, O_CREAT | O_WRONLY, 0600);
	close(fd);
	second = control_start(other, &fake_pc, e, sizeof(e));
	cr_assert_null(second);
	cr_assert_not_null(strstr(e, "not a socket"), "%s", e);
	cr_assert_eq(access(other, F_OK), 0);
	unlink(other);
}

/* ---- screenshot and sendkeys on a machine with a screen ----------------*/

Test(server, screenshot_and_sendkeys_with_a_display)
{
	char e[256], png[160], *r;
	struct vmm *vm = vmm_create_test(64u << 20);
	struct vga *vga;
	struct display_options dopt = { 0 };
	/* "aA\n" in scan code set 2: a; Shift, a, release a, release
	 * Shift; Return */
	static const uint8_t want[] = { 0x1c, 0xf0, 0x1c, 0x12, 0x1c, 0xf0,
					0x1c, 0xf0, 0x12, 0x5a, 0xf0, 0x5a };
	uint8_t got[sizeof(want)];
	unsigned n = 0;
	FILE *f;

	cr_assert_not_null(vm);
	fake_pc.kbc = i8042_create(vm);
	vga = vga_create(vm, 2, VGA_VRAM_DEFAULT, e, sizeof(e));
	cr_assert_not_null(vga, "%s", e);
	fake_pc.screen.vga = vga;
	fake_pc.screen.display =
		display_create(vga, fake_pc.kbc, &dopt, e, sizeof(e));
	cr_assert_not_null(fake_pc.screen.display, "%s", e);

	snprintf(png, sizeof(png), "%s/shot.png", sock_dir);
	{
		char req[256];

		snprintf(req, sizeof(req),
			 "{\"command\":\"screenshot\",\"path\":\"%s\"}", png);
		r = call(req);
		cr_assert_not_null(strstr(r, "\"ok\":true"), "%s", r);
	}
	f = fopen(png, "rb");
	cr_assert_not_null(f);
	{
		unsigned char sig[8];

		cr_assert_eq(fread(sig, 1, 8, f), 8);
		cr_assert_eq(memcmp(sig, "\x89PNG\r\n\x1a\n", 8), 0);
	}
	fclose(f);
	unlink(png);
	snprintf(png, sizeof(png), "%s/shot.txt", sock_dir);
	unlink(png);

	r = call("{\"command\":\"sendkeys\",\"text\":\"aA\\n\"}");
	cr_assert_not_null(strstr(r, "\"ok\":true"), "%s", r);
	while (n < sizeof(got) && (inb(vm, 0x64) & 1))
		got[n++] = inb(vm, 0x60);
	cr_assert_eq(n, sizeof(want), "%u bytes from the keyboard", n);
	cr_assert_eq(memcmp(got, want, sizeof(want)), 0);
	/* a character with no key: refused before anything is typed */
	r = call("{\"command\":\"sendkeys\",\"text\":\"x\u00e9\"}");
	cr_assert_not_null(strstr(r, "no key"), "%s", r);
	cr_assert_eq(inb(vm, 0x64) & 1, 0);

	display_destroy(fake_pc.screen.display);
	fake_pc.screen.display = NULL;
	vga_destroy(vga);
	i8042_destroy(fake_pc.kbc);
	fake_pc.kbc = NULL;
	vmm_destroy(vm);
}

/* ---- the CD-ROM's media change -----------------------------------------*/

static uint8_t atapi_packet(struct atapi *cd, const uint8_t *cdb, void *buf,
			    size_t len)
{
	struct iovec iov = { buf, len };
	struct ata_command cmd = {
		.command = 0xA0,
		.iov = &iov,
		.iovcnt = 1,
		.buffer_bytes = len,
	};

	memcpy(cmd.packet, cdb, 12);
	atapi_execute(cd, &cmd);
	return cmd.status;
}

static uint8_t sense_key(struct atapi *cd, uint8_t *asc)
{
	uint8_t cdb[12] = { 0x03, 0, 0, 0, 18 }, s[18] = { 0 };

	atapi_packet(cd, cdb, s, sizeof(s));
	*asc = s[12];
	return s[2] & 0x0f;
}

static uint8_t media_event(struct atapi *cd, uint8_t *status)
{
	uint8_t cdb[12] = { 0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8 }, d[8] = { 0 };

	atapi_packet(cd, cdb, d, sizeof(d));
	*status = d[5];
	return d[4] & 0x0f;
}

Test(media, insert_and_eject_are_seen_by_the_guest)
{
	char dir[] = "/tmp/test_vmm_media.XXXXXX", iso[64];
	uint8_t tur[12] = { 0 }, block[4096] = { 0 }, asc, st;
	struct atapi *cd;
	int fd;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(iso, sizeof(iso), "%s/a.iso", dir);
	fd = open(iso, O_CREAT | O_WRONLY, 0600);
	cr_assert_eq(write(fd, block, sizeof(block)), (ssize_t)sizeof(block));
	close(fd);
	cd = atapi_create(NULL, 1, err, sizeof(err));
	cr_assert_not_null(cd);
	cr_assert_null(atapi_medium(cd));
	/* an empty drive: not ready, medium not present */
	cr_assert(atapi_packet(cd, tur, NULL, 0) & ATA_STATUS_ERR);
	cr_assert_eq(sense_key(cd, &asc), 0x2);
	cr_assert_eq(asc, 0x3A);

	cr_assert_neq(atapi_insert(cd, "/nonexistent.iso", err, sizeof(err)),
		      0);
	cr_assert_eq(atapi_insert(cd, iso, err, sizeof(err)), 0, "%s", err);
	{
		char *m = atapi_medium(cd);

		cr_assert_str_eq(m, iso);
		free(m);
	}
	/* GET EVENT STATUS NOTIFICATION: NewMedia once, medium present */
	cr_assert_eq(media_event(cd, &st), 2);
	cr_assert_eq(st & 0x02, 0x02);
	cr_assert_eq(media_event(cd, &st), 0);
	/* the next command: UNIT ATTENTION, medium may have changed */
	cr_assert(atapi_packet(cd, tur, NULL, 0) & ATA_STATUS_ERR);
	cr_assert_eq(sense_key(cd, &asc), 0x6);
	cr_assert_eq(asc, 0x28);
	cr_assert_eq(atapi_packet(cd, tur, NULL, 0) & ATA_STATUS_ERR, 0);

	atapi_eject(cd);
	cr_assert_null(atapi_medium(cd));
	cr_assert_eq(media_event(cd, &st), 3); /* MediaRemoval */
	cr_assert_eq(st & 0x03, 0x01);	       /* tray open, no medium */
	cr_assert(atapi_packet(cd, tur, NULL, 0) & ATA_STATUS_ERR);
	atapi_destroy(cd);
	unlink(iso);
	rmdir(dir);
}

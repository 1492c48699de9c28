/* SPDX-License-Identifier: MIT */
/*
 * imgtool serve: export images over NBD (nbd/).  Foreground by default;
 * --daemon detaches once every image is open and the sockets listen, so
 * errors still reach the terminal and the exit status.
 */
#include "img.h"
#include "nbd/nbd_server.h"
#include "tools/common.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SERVE_MAX_EXPORTS 64

struct serve_args {
	const char *port, *bind, *socket;
	const char *tls_cert, *tls_key;
	const char *pidfile, *format;
	const char *snapshot; /* -l TAG: that state of every FILE */
	bool read_only, daemon, verbose;
	unsigned shared, threads;
	const char *names[SERVE_MAX_EXPORTS];
	int nnames;
};

/* One export: the image served and, for a snapshot, the disk's snapshot
 * handle (kept open: it keeps the snapshots from changing meanwhile). */
struct serve_export {
	const char *tag;
	char *display; /* FILE or FILE@TAG */
	struct img_snapshots *snaps;
	struct img *img;
};

static struct nbd_server *serve_running;

static void serve_on_signal(int sig)
{
	(void)sig;
	if (serve_running)
		nbd_server_stop(serve_running);
}

static void serve_log(void *opaque, const char *line)
{
	(void)opaque;
	fprintf(stderr, "imgtool serve: %s\n", line);
}

static void serve_usage(FILE *out)
{
	fprintf(out,
		"usage: imgtool serve [--port N] [--bind ADDR] [--socket PATH] "
		"[--read-only]\n"
		"                     [--export-name NAME]... [--shared N] "
		"[--tls-cert FILE --tls-key FILE]\n"
		"                     [--pidfile FILE] [--daemon] [--format "
		"FMT] "
		"[--threads N] [--verbose] [-l TAG]\n"
		"                     FILE[@TAG]...\n"
		"Serve each FILE as an NBD export (default 127.0.0.1 port "
		"10809).\n"
		"FILE@TAG or -l/--load-snapshot TAG (as qemu-nbd) serves "
		"snapshot TAG\n"
		"of FILE (imgtool snapshot), read-only; the export is named "
		"FILE@TAG.\n");
}

static int serve_parse_count(const char *opt, const char *text, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno || *end || end == text || v > 65535) {
		fprintf(stderr, "imgtool serve: %s: invalid count '%s'\n", opt,
			text);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int serve_parse_args(int argc, char **argv, struct serve_args *a)
{
	enum {
		OPT_TLS_CERT = 256,
		OPT_TLS_KEY,
		OPT_PIDFILE,
		OPT_DAEMON,
		OPT_THREADS,
	};
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "bind", required_argument, NULL, 'b' },
		{ "socket", required_argument, NULL, 'k' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "export-name", required_argument, NULL, 'x' },
		{ "shared", required_argument, NULL, 'e' },
		{ "format", required_argument, NULL, 'f' },
		{ "tls-cert", required_argument, NULL, OPT_TLS_CERT },
		{ "tls-key", required_argument, NULL, OPT_TLS_KEY },
		{ "pidfile", required_argument, NULL, OPT_PIDFILE },
		{ "daemon", no_argument, NULL, OPT_DAEMON },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "load-snapshot", required_argument, NULL, 'l' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "p:b:k:rx:e:f:l:vh", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'p':
			a->port = optarg;
			break;
		case 'b':
			a->bind = optarg;
			break;
		case 'k':
			a->socket = optarg;
			break;
		case 'r':
			a->read_only = true;
			break;
		case 'x':
			if (a->nnames == SERVE_MAX_EXPORTS) {
				fprintf(stderr,
					"imgtool serve: too many exports\n");
				return -1;
			}
			a->names[a->nnames++] = optarg;
			break;
		case 'e':
			if (serve_parse_count("--shared", optarg, &a->shared))
				return -1;
			break;
		case 'f':
			a->format = optarg;
			break;
		case OPT_TLS_CERT:
			a->tls_cert = optarg;
			break;
		case OPT_TLS_KEY:
			a->tls_key = optarg;
			break;
		case OPT_PIDFILE:
			a->pidfile = optarg;
			break;
		case OPT_DAEMON:
			a->daemon = true;
			break;
		case OPT_THREADS:
			if (serve_parse_count("--threads", optarg, &a->threads))
				return -1;
			break;
		case 'l':
			/* qemu-nbd's forms too: snapshot.name=TAG or
			 * snapshot.id=ID */
			a->snapshot = optarg;
			if (!strncmp(optarg, "snapshot.name=", 14))
				a->snapshot = optarg + 14;
			else if (!strncmp(optarg, "snapshot.id=", 12))
				a->snapshot = optarg + 12;
			break;
		case 'v':
			a->verbose = true;
			break;
		case 'h':
			serve_usage(stdout);
			exit(0);
		default:
			serve_usage(stderr);
			return -1;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "imgtool serve: no image given\n");
		serve_usage(stderr);
		return -1;
	}
	if (argc - optind > SERVE_MAX_EXPORTS) {
		fprintf(stderr, "imgtool serve: too many images\n");
		return -1;
	}
	if (a->nnames > argc - optind) {
		fprintf(stderr,
			"imgtool serve: more --export-name than images\n");
		return -1;
	}
	if (!a->tls_cert != !a->tls_key) {
		fprintf(stderr, "imgtool serve: --tls-cert and --tls-key go "
				"together\n");
		return -1;
	}
	return 0;
}

static int serve_write_pidfile(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
		fprintf(stderr, "imgtool serve: %s: %s\n", path,
			strerror(errno));
		return -1;
	}
	return 0;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* Does the local name exist as given?  (Else FILE@TAG names a snapshot.) */
static bool serve_name_exists(const char *file)
{
	struct stat st;

	return !strstr(file, "://") && strncmp(file, "rbd:", 4) != 0 &&
	       stat(file, &st) == 0;
}

/* Open one export: the disk, or (FILE@TAG, -l TAG) one of its
 * snapshots read-only.  The disk's snapshots are checked either way: a
 * snapshot operation a crash interrupted leaves a disk not to be served
 * until it is finished.  Prints one line on failure. */
static int serve_open_export(const struct serve_args *a, const char *arg,
			     struct serve_export *e)
{
	struct img_open_options oo = {
		.format = a->format,
		.flags = a->read_only ? IMG_OPEN_RDONLY : IMG_OPEN_RDWR,
	};
	char errbuf[IMG_ERRMSG_MAX], *file;
	const char *at = strrchr(arg, '@');
	int r;

	file = strdup(arg);
	if (!file) {
		fprintf(stderr, "imgtool serve: out of memory\n");
		return -ENOMEM;
	}
	if (a->snapshot) {
		e->tag = a->snapshot;
	} else if (at && !serve_name_exists(arg)) {
		file[at - arg] = '\0';
		if (serve_name_exists(file))
			e->tag = at + 1;
		else
			file[at - arg] = '@';
	}
	if (e->tag ? asprintf(&e->display, "%s@%s", file, e->tag) < 0
		   : !(e->display = strdup(arg))) {
		e->display = NULL;
		fprintf(stderr, "imgtool serve: out of memory\n");
		free(file);
		return -ENOMEM;
	}
	r = img_snapshots_open(&e->snaps, file, a->format, IMG_OPEN_RDONLY,
			       errbuf, sizeof(errbuf));
	if (r < 0) {
		fprintf(stderr, "imgtool: %s\n", errbuf);
		free(file);
		return r;
	}
	if (e->tag) {
		r = img_snapshots_open_image(e->snaps, e->tag, &e->img);
		if (r < 0)
			fprintf(stderr, "imgtool: %s\n",
				img_snapshots_errmsg(e->snaps));
		free(file);
		return r;
	}
	/* The disk itself: its snapshot handle (and the disk opened in it,
	 * for internal snapshots) must not hold the disk against the
	 * server's own open. */
	img_snapshots_close(e->snaps);
	e->snaps = NULL;
	r = img_open(&e->img, file, &oo, errbuf, sizeof(errbuf));
	if (r < 0)
		fprintf(stderr, "imgtool: %s\n", errbuf);
	free(file);
	return r;
}

/* The address as a URI host: IPv6 literals need brackets. */
static void serve_print_banner(const struct serve_args *a, int port,
			       const char *file, const char *name, bool tcp)
{
	const char *scheme = a->tls_cert ? "nbds" : "nbd";

	if (tcp) {
		const char *host = a->bind ? a->bind : "127.0.0.1";
		bool v6 = strchr(host, ':') != NULL;
		printf("serving %s at %s://%s%s%s:%d/%s\n", file, scheme,
		       v6 ? "[" : "", host, v6 ? "]" : "", port, name);
	}
	if (a->socket)
		printf("serving %s at %s+unix:///%s?socket=%s\n", file, scheme,
		       name, a->socket);
}

/* --daemon: tell the waiting parent we serve, and leave the directory
 * (relative paths were resolved at open; nothing depends on it). */
static void serve_detach(int status_fd)
{
	tool_daemon_ready(status_fd);
	if (chdir("/")) {
		/* nothing to do: the directory does not matter */
	}
}

int cmd_serve(int argc, char **argv)
{
	struct serve_args a = { 0 };
	struct img *imgs[SERVE_MAX_EXPORTS] = { 0 };
	struct serve_export exports[SERVE_MAX_EXPORTS] = { 0 };
	struct nbd_server *srv = NULL;
	struct sigaction sa = { 0 };
	char errbuf[IMG_ERRMSG_MAX];
	char *pidfile = NULL;
	int nimgs = 0, status_fd = -1, port = 0, ret = 1, r;
	bool tcp;

	if (serve_parse_args(argc, argv, &a))
		return 2;
	tcp = !a.socket || a.port || a.bind;
	if (a.daemon)
		status_fd = tool_daemon_start("serve");

	struct nbd_server_options so = {
		.max_clients = a.shared,
		.workers = a.threads,
		.tls_cert = a.tls_cert,
		.tls_key = a.tls_key,
		.log = a.verbose ? serve_log : NULL,
	};
	if (nbd_server_new(&srv, &so, errbuf, sizeof(errbuf)) < 0) {
		fprintf(stderr, "imgtool serve: %s\n", errbuf);
		goto out;
	}
	for (int i = optind; i < argc; i++) {
		struct serve_export *e = &exports[nimgs];
		const char *name;

		if (serve_open_export(&a, argv[i], e) < 0)
			goto out;
		imgs[nimgs++] = e->img;
		int idx = nimgs - 1;
		name = idx < a.nnames ? a.names[idx] : base_name(e->display);
		r = nbd_server_add_export(srv, name, e->display, imgs[idx],
					  a.read_only || e->tag);
		if (r < 0) {
			fprintf(stderr, "imgtool serve: export '%s': %s\n",
				idx < a.nnames ? a.names[idx] : e->display,
				r == -EEXIST
					? "name used twice (name the exports with --export-name)"
					: strerror(-r));
			goto out;
		}
	}
	if (tcp) {
		r = nbd_server_listen_tcp(srv, a.bind, a.port, errbuf,
					  sizeof(errbuf));
		if (r < 0) {
			fprintf(stderr, "imgtool serve: %s\n", errbuf);
			goto out;
		}
		port = nbd_server_tcp_port(srv);
	}
	if (a.socket) {
		r = nbd_server_listen_unix(srv, a.socket, errbuf,
					   sizeof(errbuf));
		if (r < 0) {
			fprintf(stderr, "imgtool serve: %s\n", errbuf);
			goto out;
		}
	}
	if (a.pidfile) {
		/* absolute, so it can be removed after the daemon's chdir */
		pidfile = realpath(".", NULL);
		if (pidfile && a.pidfile[0] != '/') {
			char *full = NULL;
			if (asprintf(&full, "%s/%s", pidfile, a.pidfile) < 0)
				full = NULL;
			free(pidfile);
			pidfile = full;
		} else {
			free(pidfile);
			pidfile = strdup(a.pidfile);
		}
		if (!pidfile || serve_write_pidfile(pidfile)) {
			free(pidfile);
			pidfile = NULL;
			goto out;
		}
	}

	sa.sa_handler = serve_on_signal;
	sigemptyset(&sa.sa_mask);
	serve_running = srv;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	for (int i = 0; i < nimgs; i++) {
		const char *name = i < a.nnames ? a.names[i] : NULL;

		serve_print_banner(&a, port, exports[i].display,
				   name ? name : base_name(exports[i].display),
				   tcp);
	}
	fflush(stdout);
	if (status_fd >= 0) {
		serve_detach(status_fd);
		status_fd = -1;
	}

	nbd_server_run(srv);
	ret = 0;
out:
	nbd_server_free(srv);
	serve_running = NULL;
	for (int i = 0; i < nimgs; i++)
		if (tool_close(imgs[i]) < 0)
			ret = 1;
	for (int i = 0; i < SERVE_MAX_EXPORTS; i++) {
		img_snapshots_close(exports[i].snaps);
		free(exports[i].display);
	}
	if (pidfile) {
		unlink(pidfile);
		free(pidfile);
	}
	if (status_fd >= 0)
		tool_daemon_failed(status_fd);
	return ret;
}

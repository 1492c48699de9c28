// SPDX-License-Identifier: MIT
/*
 * The serial console behind the UART: the terminal (raw mode while
 * attached, Ctrl-A x quits, Ctrl-A Ctrl-A sends a Ctrl-A), a pipe, a file
 * (output only) or a Unix socket that one client at a time attaches to.
 * Input is fed to the UART's receive FIFO no faster than the guest drains
 * it, so a script can paste a whole line into a waiting boot prompt.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "vmm/machine.h"

#define CTRL_A 0x01

enum console_kind { CONSOLE_STDIO, CONSOLE_FILE, CONSOLE_UNIX };

struct console {
	enum console_kind kind;
	int in_fd;
	int out_fd;
	struct outbuf *out;
	int listen_fd;
	char path[108];
	bool tty;
	bool raw;
	struct termios saved;
	bool escape; /* Ctrl-A seen */
	struct vmm *vm;
	struct uart *uart;
	pthread_t thread;
	bool thread_started;
	bool thread_done; /* the input thread returned (under lock) */
	pthread_mutex_t lock;
};

struct console *console_open(const char *spec, char *err, size_t errlen)
{
	struct console *con = calloc(1, sizeof(*con));

	if (!con) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	con->in_fd = -1;
	con->out_fd = -1;
	con->listen_fd = -1;
	pthread_mutex_init(&con->lock, NULL);
	if (!strcmp(spec, "stdio")) {
		con->kind = CONSOLE_STDIO;
		con->in_fd = STDIN_FILENO;
		con->out_fd = STDOUT_FILENO;
		con->tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
	} else if (!strncmp(spec, "file:", 5) && spec[5]) {
		con->kind = CONSOLE_FILE;
		con->out_fd = open(spec + 5,
				   O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
				   0644);
		if (con->out_fd < 0) {
			snprintf(err, errlen, "--serial: cannot create %s: %s",
				 spec + 5, strerror(errno));
			goto fail;
		}
	} else if (!strncmp(spec, "unix:", 5) && spec[5]) {
		struct sockaddr_un addr = { .sun_family = AF_UNIX };

		con->kind = CONSOLE_UNIX;
		if (strlen(spec + 5) >= sizeof(addr.sun_path)) {
			snprintf(err, errlen, "--serial: socket path too long");
			goto fail;
		}
		strcpy(addr.sun_path, spec + 5);
		strcpy(con->path, spec + 5);
		con->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		unlink(addr.sun_path);
		if (con->listen_fd < 0 ||
		    bind(con->listen_fd, (struct sockaddr *)&addr,
			 sizeof(addr)) < 0 ||
		    listen(con->listen_fd, 1) < 0) {
			snprintf(err, errlen,
				 "--serial: cannot listen on %s: %s", spec + 5,
				 strerror(errno));
			goto fail;
		}
	} else {
		snprintf(err, errlen,
			 "--serial must be stdio, file:PATH or unix:PATH, not "
			 "'%s'",
			 spec);
		goto fail;
	}
	con->out = outbuf_create(con->out_fd);
	if (!con->out) {
		snprintf(err, errlen, "cannot start the console output thread");
		goto fail;
	}
	return con;
fail:
	console_close(con);
	return NULL;
}

struct outbuf *console_output(const struct console *con)
{
	return con->out;
}

static void console_set_raw(struct console *con)
{
	struct termios raw;

	if (!con->tty || tcgetattr(STDIN_FILENO, &con->saved) < 0)
		return;
	raw = con->saved;
	cfmakeraw(&raw);
	/* keep output processing: the guest's "\n" stays a newline */
	raw.c_oflag |= OPOST;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0)
		con->raw = true;
}

/* Feed bytes to the UART, waiting while its FIFO is full. */
static bool console_feed(struct console *con, const uint8_t *buf, size_t len)
{
	while (len) {
		size_t taken = uart_receive(con->uart, buf, len);

		buf += taken;
		len -= taken;
		if (len && !uart_wait_rx_space(con->uart))
			return false;
	}
	return true;
}

/* Terminal escapes: Ctrl-A x quits, Ctrl-A h helps, Ctrl-A Ctrl-A is a
 * literal Ctrl-A.  Returns false when the console must stop. */
static bool console_input_tty(struct console *con, const uint8_t *buf,
			      size_t len)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t byte = buf[i];

		if (!con->escape && byte == CTRL_A) {
			con->escape = true;
			continue;
		}
		if (con->escape) {
			con->escape = false;
			if (byte == 'x' || byte == 'X') {
				vmm_request_stop(con->vm, 130,
						 "terminated (Ctrl-A x)");
				return false;
			}
			if (byte == 'h' || byte == '?') {
				fprintf(stderr,
					"\r\nC-a x  quit\r\nC-a C-a  send "
					"C-a\r\n");
				continue;
			}
			if (byte != CTRL_A)
				continue;
		}
		if (!console_feed(con, &byte, 1))
			return false;
	}
	return true;
}

static void console_read_loop(struct console *con);

static void *console_thread(void *opaque)
{
	struct console *con = opaque;

	console_read_loop(con);
	/* the last touch of con: console_close frees it once this is set */
	pthread_mutex_lock(&con->lock);
	con->thread_done = true;
	pthread_mutex_unlock(&con->lock);
	return NULL;
}

static void console_read_loop(struct console *con)
{
	uint8_t buf[256];

	for (;;) {
		ssize_t n;

		if (con->kind == CONSOLE_UNIX && con->in_fd < 0) {
			int client = accept4(con->listen_fd, NULL, NULL,
					     SOCK_CLOEXEC);

			if (client < 0) {
				if (errno == EINTR || errno == ECONNABORTED)
					continue;
				return;
			}
			con->in_fd = client;
			outbuf_set_fd(con->out, client);
		}
		n = read(con->in_fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (con->kind != CONSOLE_UNIX)
				return; /* end of input: keep running */
			outbuf_set_fd(con->out, -1);
			close(con->in_fd);
			con->in_fd = -1;
			continue;
		}
		if (con->tty ? !console_input_tty(con, buf, n)
			     : !console_feed(con, buf, n))
			return;
	}
}

int console_attach(struct console *con, struct vmm *vm, struct uart *uart,
		   char *err, size_t errlen)
{
	int ret;

	con->vm = vm;
	con->uart = uart;
	if (con->kind == CONSOLE_FILE)
		return 0;
	console_set_raw(con);
	ret = pthread_create(&con->thread, NULL, console_thread, con);
	if (ret) {
		snprintf(err, errlen, "cannot start the console thread: %s",
			 strerror(ret));
		return -ret;
	}
	/* The thread may block in read() forever; it is never joined. */
	pthread_detach(con->thread);
	con->thread_started = true;
	return 0;
}

bool console_close(struct console *con)
{
	bool reader;

	if (!con)
		return false;
	if (con->raw) {
		tcsetattr(STDIN_FILENO, TCSANOW, &con->saved);
		con->raw = false;
	}
	if (con->uart)
		uart_shutdown(con->uart);
	/* the vCPUs are stopped: write out what the guest printed last */
	outbuf_destroy(con->out);
	con->out = NULL;
	if (con->kind == CONSOLE_FILE && con->out_fd >= 0)
		close(con->out_fd);
	if (con->listen_fd >= 0) {
		close(con->listen_fd);
		unlink(con->path);
	}
	/* a detached input thread still blocked in read() may use con and
	 * the UART later: leave both allocated then */
	pthread_mutex_lock(&con->lock);
	reader = con->thread_started && !con->thread_done;
	pthread_mutex_unlock(&con->lock);
	if (!reader) {
		pthread_mutex_destroy(&con->lock);
		free(con);
	}
	return reader;
}

/* SPDX-License-Identifier: MIT */
/*
 * The control protocol of a running VM (docs/control.md): a Unix socket
 * (mode 0600) speaking JSON lines.  Each request is one JSON object on one
 * line, {"command": "status"}; each gets one reply line,
 * {"ok": true, ...} or {"ok": false, "error": "..."}.  Several clients may be
 * connected at once; one thread serves them all with poll(), so a client
 * that sends garbage, sends a huge line or never reads its replies is cut
 * off alone and never stops or slows the guest.
 */
#ifndef IMGVM_CONTROL_H
#define IMGVM_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

/* Longest request line; a longer one gets an error reply and the client is
 * disconnected. */
#define CONTROL_LINE_MAX 65536
/* Replies a client has not read yet, at most; beyond, it is disconnected. */
#define CONTROL_PENDING_MAX (1u << 20)
/* Clients connected at once; one more gets an error reply and is closed. */
#define CONTROL_CLIENTS_MAX 64

enum control_command {
	CONTROL_STATUS,
	CONTROL_EJECT,
	CONTROL_INSERT,
	CONTROL_POWERBUTTON,
	CONTROL_RESET,
	CONTROL_PAUSE,
	CONTROL_RESUME,
	CONTROL_STOP,
	CONTROL_SCREENSHOT,
	CONTROL_SENDKEYS,
};

struct control_request {
	enum control_command command;
	/* insert, screenshot: "path"; sendkeys: "text" (NUL-free) */
	char *argument;
};

/* The command names, by enum control_command. */
extern const char *const control_command_names[];

/* Parses one request line (without its newline).  Errors as one line in
 * err; control_request_free frees the argument. */
int control_parse_request(const char *line, size_t len,
			  struct control_request *req, char *err,
			  size_t errlen);
void control_request_free(struct control_request *req);

struct pc;
struct control;

/* Serves the control protocol for pc on a new socket at path (an old
 * socket file there is replaced; anything else is an error).  Errors as
 * one line in err. */
struct control *control_start(const char *path, struct pc *pc, char *err,
			      size_t errlen);
/* Stops serving, closes every client, removes the socket file. */
void control_stop(struct control *ctl);

/* Client side (the imgvm subcommands): sends one request line and reads
 * one reply line into a malloc'd string. */
int control_call(const char *socket_path, const char *request, char **reply,
		 char *err, size_t errlen);

#endif

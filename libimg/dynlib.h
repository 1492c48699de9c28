/* SPDX-License-Identifier: MIT */
/*
 * Libraries a storage backend needs (librbd, libcurl, libnbd) are loaded
 * when the first name of that backend is opened, not when a program
 * starts: linked in, their dozens of dependencies (Ceph's alone pull in
 * boost, ibverbs and cryptsetup) made every imgtool run start 7 times as
 * slowly, and imgtool could not start at all where they were not
 * installed.  This is QEMU's block-module split (qemu-block-extra) in one
 * library.
 *
 * A backend lists the functions it calls once, as an X-macro, and keeps
 * their addresses in a struct of pointers:
 *
 *	#define RBD_FUNCTIONS(X) X(rbd_open) X(rbd_close)
 *	static struct { RBD_FUNCTIONS(IMG_DYNLIB_POINTER) } rbd_lib;
 *	#define RBD_SYMBOL(f) IMG_DYNLIB_SYMBOL(rbd_lib, f)
 *	static const struct img_dynlib_symbol rbd_symbols[] = {
 *		RBD_FUNCTIONS(RBD_SYMBOL) { NULL, NULL } };
 *	#define rbd_open rbd_lib.rbd_open
 *
 * The #defines come after the library's header, so that its declarations
 * give the pointers their types and the calls stay as the library's
 * documentation writes them.
 */
#ifndef IMG_DYNLIB_H
#define IMG_DYNLIB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct img_dynlib_symbol {
	const char *name;
	void **slot;
};

#define IMG_DYNLIB_POINTER(f) __typeof__(&f) f;
#define IMG_DYNLIB_SYMBOL(lib, f) { #f, (void **)&(lib).f },

struct img_dynlib {
	const char *soname;  /* e.g. "librbd.so.1" */
	const char *package; /* the Debian package that installs it */
	const struct img_dynlib_symbol *symbols; /* ends with a NULL name */
	pthread_mutex_t lock;
	bool tried;
	int err;	 /* 0 once loaded, else a negative errno */
	char error[256]; /* why it did not load */
};

#define IMG_DYNLIB_INIT(so, pkg, syms)                               \
	{                                                            \
		.soname = (so), .package = (pkg), .symbols = (syms), \
		.lock = PTHREAD_MUTEX_INITIALIZER                    \
	}

/* Loads the library and fills every symbol's slot the first time; later
 * calls return the first outcome.  0, or a negative errno with a message
 * that names the library and the package to install. */
int img_dynlib_load(struct img_dynlib *lib, char *errbuf, size_t errlen);

#endif

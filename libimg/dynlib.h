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
 * A backend lists the functions it calls once, as an X-macro; one line
 * makes the struct of their pointers (rbd_lib), the table of their names
 * and the library (rbd_library) from it:
 *
 *	#define RBD_FUNCTIONS(X) X(rbd_open) X(rbd_close)
 *	IMG_DYNLIB_DEFINE(rbd, RBD_FUNCTIONS, "librbd.so.1", "librbd1");
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

struct img_dynlib {
	const char *soname;	  /* e.g. "librbd.so.1" */
	const char *package;	  /* the Debian package that installs it */
	const char *const *names; /* the functions, ending with NULL */
	void *slots;		  /* one pointer a name, in their order */
	pthread_mutex_t lock;
	bool tried;
	int err;	 /* 0 once loaded, else a negative errno */
	char error[256]; /* why it did not load */
};

#define IMG_DYNLIB_INIT(so, pkg, names_, slots_)                     \
	{                                                            \
		.soname = (so), .package = (pkg), .names = (names_), \
		.slots = (slots_), .lock = PTHREAD_MUTEX_INITIALIZER \
	}

#define IMG_DYNLIB_POINTER(f) __typeof__(&f) f;
#define IMG_DYNLIB_NAME(f) #f,

/* The loader fills the struct as an array of pointers: it has one member
 * a name, all of them function pointers, so nothing lies between them. */
#define IMG_DYNLIB_DEFINE(name, FUNCTIONS, so, pkg)                            \
	static struct {                                                        \
		FUNCTIONS(IMG_DYNLIB_POINTER)                                  \
	} name##_lib;                                                          \
	static const char *const name##_names[] = { FUNCTIONS(IMG_DYNLIB_NAME) \
							    NULL };            \
	_Static_assert(                                                        \
		sizeof(name##_lib) ==                                          \
			sizeof(void *) *                                       \
				(sizeof(name##_names) / sizeof(char *) - 1),   \
		"one pointer a function");                                     \
	static struct img_dynlib name##_library =                              \
		IMG_DYNLIB_INIT(so, pkg, name##_names, &name##_lib)

/* Loads the library and fills every pointer the first time; later
 * calls return the first outcome.  0, or a negative errno with a message
 * that names the library and the package to install. */
int img_dynlib_load(struct img_dynlib *lib, char *errbuf, size_t errlen);

#endif

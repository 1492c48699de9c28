// SPDX-License-Identifier: MIT
/*
 * The screen: one renderer over the VGA, a refresh thread that serves the
 * front ends (VNC viewers through vnc.c, a window through sdl.c), and the
 * screenshot and text dump calls.
 *
 * The refresh thread sleeps until something needs it: a viewer's message
 * or connection, a window event, the next look at the screen, or the stop.
 * It looks at the screen only while someone watches (a viewer connected or
 * the window visible): every 33 ms while the screen changes, then less and
 * less often, up to every second, while it does not (each look asks KVM for
 * the framebuffer's dirty log); a key or pointer event brings it back to
 * 33 ms, as QEMU's VNC server backs off.  Unwatched, it does not wake.
 *
 * The renderer, the surface and the VNC server are under d->lock (the
 * library reads the surface while it serves viewers, and a redraw may
 * reallocate it); the thread does not hold it while it sleeps.  A
 * screenshot taken from another thread also brings the surface up to date;
 * what it found changed is kept in pending_* for the refresh thread to
 * tell the front ends.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "vmm/display/display.h"
#include "vmm/display/png.h"
#include "vmm/display/render.h"
#include "vmm/display/sdl.h"
#include "vmm/display/vnc.h"

#define REFRESH_US 33000
#define REFRESH_IDLE_STEP_US 100000
#define REFRESH_IDLE_MAX_US 1000000
/* descriptors the thread waits on: the stop event, VNC's listening
 * sockets and viewers (LibVNCServer serves fewer than this) */
#define DISPLAY_MAX_FDS 256

struct display {
	struct vga *vga;
	struct i8042 *kbc;
	pthread_mutex_t lock;
	struct renderer *renderer;
	struct vnc_server *vnc;
	struct sdl_window *sdl;
	struct sdl_window_options sdl_opt;
	bool want_sdl;
	/* what the surface holds that the front ends have not been shown */
	bool pending_resize;
	struct render_rect pending;
	pthread_t thread;
	bool thread_started;
	bool stopping;
	int stop_fd; /* eventfd: wakes the thread to stop */
	/* the thread's start (it opens the window): 0 or -errno, err */
	pthread_cond_t started_cond;
	bool started;
	int start_status;
	char start_err[256];
};

static void rect_union(struct render_rect *into, const struct render_rect *r)
{
	unsigned x2, y2;

	if (!r->width)
		return;
	if (!into->width) {
		*into = *r;
		return;
	}
	x2 = into->x + into->width > r->x + r->width ? into->x + into->width
						     : r->x + r->width;
	y2 = into->y + into->height > r->y + r->height ? into->y + into->height
						       : r->y + r->height;
	into->x = into->x < r->x ? into->x : r->x;
	into->y = into->y < r->y ? into->y : r->y;
	into->width = x2 - into->x;
	into->height = y2 - into->y;
}

/* Called with d->lock held. */
static int display_update_locked(struct display *d)
{
	struct render_rect rect;
	bool resized;
	int ret = renderer_update(d->renderer, &resized, &rect);

	if (ret)
		return ret;
	if (resized)
		d->pending_resize = true;
	rect_union(&d->pending, &rect);
	return 0;
}

static long elapsed_us(const struct timespec *since)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - since->tv_sec) * 1000000L +
	       (now.tv_nsec - since->tv_nsec) / 1000;
}

/* Called with d->lock held: the changes go to the front ends. */
static void display_show_pending(struct display *d)
{
	unsigned w, h;
	uint32_t *pixels = (uint32_t *)renderer_surface(d->renderer, &w, &h);

	if (d->pending_resize) {
		if (d->vnc)
			vnc_server_resize(d->vnc, pixels, w, h);
		if (d->sdl)
			sdl_window_resize(d->sdl, pixels, w, h);
	} else if (d->pending.width) {
		if (d->vnc)
			vnc_server_changed(d->vnc, d->pending.x, d->pending.y,
					   d->pending.width, d->pending.height);
		if (d->sdl)
			sdl_window_changed(d->sdl, pixels, d->pending.x,
					   d->pending.y, d->pending.width,
					   d->pending.height);
	}
	d->pending_resize = false;
	memset(&d->pending, 0, sizeof(d->pending));
}

static void display_started(struct display *d, int status)
{
	pthread_mutex_lock(&d->lock);
	d->start_status = status;
	d->started = true;
	pthread_cond_signal(&d->started_cond);
	pthread_mutex_unlock(&d->lock);
}

static int display_open_window(struct display *d)
{
	unsigned w, h;
	int ret = 0;

	pthread_mutex_lock(&d->lock);
	renderer_surface(d->renderer, &w, &h);
	d->sdl = sdl_window_create(&d->sdl_opt, w, h, d->start_err,
				   sizeof(d->start_err));
	if (!d->sdl)
		ret = -EINVAL;
	else
		d->pending_resize = true; /* the first frame */
	pthread_mutex_unlock(&d->lock);
	return ret;
}

static void *display_thread(void *opaque)
{
	struct display *d = opaque;
	long interval = REFRESH_US;
	struct timespec last_look = { 0 };
	bool was_watched = false;
	struct pollfd fds[DISPLAY_MAX_FDS];

	if (d->want_sdl) {
		int ret = display_open_window(d);

		display_started(d, ret);
		if (ret)
			return NULL;
	} else {
		display_started(d, 0);
	}
	while (!__atomic_load_n(&d->stopping, __ATOMIC_ACQUIRE)) {
		bool watched, input, changed = false;
		long wait_us = -1;
		unsigned nfds = 0;

		pthread_mutex_lock(&d->lock);
		watched = (d->vnc && vnc_server_has_viewers(d->vnc)) ||
			  (d->sdl && sdl_window_visible(d->sdl));
		input = (d->vnc && vnc_server_input_seen(d->vnc)) |
			(d->sdl && sdl_window_input_seen(d->sdl));
		if (input || (watched && !was_watched))
			interval = REFRESH_US;
		if (watched && !was_watched)
			memset(&last_look, 0, sizeof(last_look));
		was_watched = watched;
		if (watched && elapsed_us(&last_look) >= interval - 1000 &&
		    display_update_locked(d) == 0) {
			changed = d->pending_resize || d->pending.width;
			display_show_pending(d);
			clock_gettime(CLOCK_MONOTONIC, &last_look);
			interval = changed ? REFRESH_US
					   : interval + REFRESH_IDLE_STEP_US;
			if (interval > REFRESH_IDLE_MAX_US)
				interval = REFRESH_IDLE_MAX_US;
		}
		if (d->vnc) {
			/* viewers' messages that woke us, updates to send */
			vnc_server_poll(d->vnc, 0);
			nfds = vnc_server_fds(d->vnc, fds + 1,
					      DISPLAY_MAX_FDS - 1);
		}
		if (watched) {
			wait_us = interval - elapsed_us(&last_look);
			if (wait_us < 0)
				wait_us = 0;
			/* LibVNCServer holds a change back a few ms to merge
			 * the next ones: come back to send it */
			if (changed && d->vnc &&
			    wait_us > vnc_server_send_delay_us(d->vnc) + 1000)
				wait_us =
					vnc_server_send_delay_us(d->vnc) + 1000;
		}
		pthread_mutex_unlock(&d->lock);

		if (d->sdl) {
			/* SDL waits on its own connection: viewers are
			 * served between its waits */
			if (wait_us < 0 || (d->vnc && wait_us > REFRESH_US))
				wait_us = d->vnc ? REFRESH_US
						 : REFRESH_IDLE_MAX_US;
			sdl_window_poll(d->sdl, wait_us);
			continue;
		}
		fds[0] = (struct pollfd){ .fd = d->stop_fd, .events = POLLIN };
		if (poll(fds, nfds + 1,
			 wait_us < 0 ? -1 : (int)((wait_us + 999) / 1000)) <
			    0 &&
		    errno != EINTR)
			break;
	}
	if (d->sdl) {
		pthread_mutex_lock(&d->lock);
		sdl_window_destroy(d->sdl);
		d->sdl = NULL;
		pthread_mutex_unlock(&d->lock);
	}
	return NULL;
}

struct display *display_create(struct vga *vga, struct i8042 *kbc,
			       const struct display_options *opt, char *err,
			       size_t errlen)
{
	struct display *d = calloc(1, sizeof(*d));
	bool resized;
	struct render_rect rect;
	unsigned w, h;
	uint32_t *pixels;

	if (!d) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->vga = vga;
	d->kbc = kbc;
	d->stop_fd = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->started_cond, NULL);
	d->renderer = renderer_create(vga);
	if (!d->renderer || renderer_update(d->renderer, &resized, &rect)) {
		snprintf(err, errlen, "out of memory for the screen");
		goto fail;
	}
	if (opt->sdl && !sdl_window_available()) {
		sdl_window_create(NULL, 0, 0, err, errlen);
		goto fail;
	}
	if (!opt->vnc && !opt->sdl)
		return d;
	d->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (d->stop_fd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto fail;
	}
	if (opt->vnc) {
		pixels = (uint32_t *)renderer_surface(d->renderer, &w, &h);
		d->vnc = vnc_server_create(opt->vnc, opt->vnc_password_file,
					   kbc, opt->tablet, pixels, w, h, err,
					   errlen);
		if (!d->vnc)
			goto fail;
	}
	d->want_sdl = opt->sdl;
	d->sdl_opt = (struct sdl_window_options){
		.title = opt->title,
		.kbc = kbc,
		.tablet = opt->tablet,
		.on_close = opt->on_close,
		.opaque = opt->close_opaque,
	};
	if (pthread_create(&d->thread, NULL, display_thread, d)) {
		snprintf(err, errlen, "cannot start the display thread");
		goto fail;
	}
	d->thread_started = true;
	pthread_mutex_lock(&d->lock);
	while (!d->started)
		pthread_cond_wait(&d->started_cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
	if (d->start_status) {
		snprintf(err, errlen, "%s", d->start_err);
		goto fail;
	}
	return d;
fail:
	display_destroy(d);
	return NULL;
}

void display_destroy(struct display *d)
{
	if (!d)
		return;
	if (d->thread_started) {
		uint64_t one = 1;

		__atomic_store_n(&d->stopping, true, __ATOMIC_RELEASE);
		if (write(d->stop_fd, &one, sizeof(one)) != sizeof(one))
			perror("imgvm: display stop");
		pthread_join(d->thread, NULL);
	}
	if (d->stop_fd >= 0)
		close(d->stop_fd);
	vnc_server_destroy(d->vnc);
	renderer_destroy(d->renderer);
	pthread_cond_destroy(&d->started_cond);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

static int write_text_file(const char *path, const char *text, char *err,
			   size_t errlen)
{
	FILE *f = fopen(path, "we");
	int ret = 0;

	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (fputs(text, f) == EOF)
		ret = -EIO;
	if (fclose(f) && !ret)
		ret = -errno;
	if (ret)
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
	return ret;
}

int display_screenshot(struct display *d, const char *png_path, char *err,
		       size_t errlen)
{
	const uint32_t *pixels;
	unsigned w, h;
	char *text = NULL;
	int ret;

	pthread_mutex_lock(&d->lock);
	ret = display_update_locked(d);
	if (ret) {
		snprintf(err, errlen, "cannot draw the screen: %s",
			 strerror(-ret));
		goto out;
	}
	pixels = renderer_surface(d->renderer, &w, &h);
	ret = png_write_rgbx(png_path, pixels, w, h, err, errlen);
	if (ret)
		goto out;
	if (render_text(d->vga, &text) == 0) {
		size_t n = strlen(png_path);
		char *txt = malloc(n + 5);

		if (!txt) {
			ret = -ENOMEM;
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		strcpy(txt, png_path);
		if (n >= 4 && !strcmp(txt + n - 4, ".png"))
			txt[n - 4] = '\0';
		strcat(txt, ".txt");
		ret = write_text_file(txt, text, err, errlen);
		free(txt);
	}
out:
	pthread_mutex_unlock(&d->lock);
	free(text);
	return ret;
}

int display_text_dump(struct display *d, char **text)
{
	return render_text(d->vga, text);
}

// SPDX-License-Identifier: MIT
/*
 * The screen: one renderer over the VGA, a refresh thread that serves
 * VNC viewers (about 30 frames a second, and only while a viewer is
 * connected: an unwatched screen costs one select() a tick), and the
 * screenshot and text dump calls.
 *
 * The renderer, the surface and the VNC server are under d->lock (the
 * library reads the surface while it serves viewers, and a redraw may
 * reallocate it).  A screenshot taken from another thread also brings the
 * surface up to date; what it found changed is kept in pending_* for the
 * refresh thread to tell the viewers.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmm/display/display.h"
#include "vmm/display/png.h"
#include "vmm/display/render.h"
#include "vmm/display/vnc.h"

#define REFRESH_US 33000
/* An unchanged screen is looked at less and less often, up to this
 * interval (each look asks KVM for the framebuffer's dirty log); a change
 * or a viewer's key or pointer event brings it back to REFRESH_US. */
#define REFRESH_IDLE_STEP_US 50000
#define REFRESH_IDLE_MAX_US 500000

struct display {
	struct vga *vga;
	struct i8042 *kbc;
	pthread_mutex_t lock;
	struct renderer *renderer;
	struct vnc_server *vnc;
	/* what the surface holds that the viewers have not been told */
	bool pending_resize;
	struct render_rect pending;
	pthread_t thread;
	bool thread_started;
	bool stopping;
	unsigned waiters; /* other threads waiting for the lock */
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

static void *display_thread(void *opaque)
{
	struct display *d = opaque;
	long interval = REFRESH_US;
	struct timespec last_look;
	bool had_viewers = false;

	clock_gettime(CLOCK_MONOTONIC, &last_look);
	while (!__atomic_load_n(&d->stopping, __ATOMIC_ACQUIRE)) {
		bool viewers;

		pthread_mutex_lock(&d->lock);
		viewers = vnc_server_has_viewers(d->vnc);
		if (vnc_server_input_seen(d->vnc) || (viewers && !had_viewers))
			interval = REFRESH_US;
		had_viewers = viewers;
		if (viewers && elapsed_us(&last_look) >= interval - 1000 &&
		    display_update_locked(d) == 0) {
			unsigned w, h;
			uint32_t *pixels = (uint32_t *)renderer_surface(
				d->renderer, &w, &h);
			bool changed = d->pending_resize || d->pending.width;

			if (d->pending_resize)
				vnc_server_resize(d->vnc, pixels, w, h);
			else if (d->pending.width)
				vnc_server_changed(d->vnc, d->pending.x,
						   d->pending.y,
						   d->pending.width,
						   d->pending.height);
			d->pending_resize = false;
			memset(&d->pending, 0, sizeof(d->pending));
			clock_gettime(CLOCK_MONOTONIC, &last_look);
			interval = changed ? REFRESH_US
					   : interval + REFRESH_IDLE_STEP_US;
			if (interval > REFRESH_IDLE_MAX_US)
				interval = REFRESH_IDLE_MAX_US;
		}
		vnc_server_poll(d->vnc, REFRESH_US);
		pthread_mutex_unlock(&d->lock);
		/* let a screenshot in before locking again */
		while (__atomic_load_n(&d->waiters, __ATOMIC_ACQUIRE))
			usleep(1000);
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
	pthread_mutex_init(&d->lock, NULL);
	d->renderer = renderer_create(vga);
	if (!d->renderer || renderer_update(d->renderer, &resized, &rect)) {
		snprintf(err, errlen, "out of memory for the screen");
		goto fail;
	}
	if (!opt->vnc)
		return d;
	pixels = (uint32_t *)renderer_surface(d->renderer, &w, &h);
	d->vnc = vnc_server_create(opt->vnc, opt->vnc_password_file, kbc,
				   opt->tablet, pixels, w, h, err, errlen);
	if (!d->vnc)
		goto fail;
	if (pthread_create(&d->thread, NULL, display_thread, d)) {
		snprintf(err, errlen, "cannot start the display thread");
		goto fail;
	}
	d->thread_started = true;
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
		__atomic_store_n(&d->stopping, true, __ATOMIC_RELEASE);
		pthread_join(d->thread, NULL);
	}
	vnc_server_destroy(d->vnc);
	renderer_destroy(d->renderer);
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

	__atomic_add_fetch(&d->waiters, 1, __ATOMIC_ACQ_REL);
	pthread_mutex_lock(&d->lock);
	__atomic_sub_fetch(&d->waiters, 1, __ATOMIC_ACQ_REL);
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

// SPDX-License-Identifier: MIT
/*
 * Buffered output for the console and the firmware log: the vCPU appends
 * bytes and goes back to the guest; a thread writes them out in large
 * chunks.  A guest printing one byte per port write would otherwise wait
 * for one write(2) per byte, which on a slow terminal, pipe or network
 * file system dominates boot time.  When the buffer is full the vCPU
 * waits: output is never dropped while the fd accepts it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/machine.h"

#define OUTBUF_SIZE (64 * 1024)
#define OUTBUF_BATCH_US 4000

struct outbuf {
	pthread_mutex_t lock;
	pthread_cond_t data;
	pthread_cond_t space;
	int fd;
	bool closing;
	bool waiting; /* the writer sleeps on data */
	bool thread_started;
	pthread_t thread;
	size_t head;
	size_t count;
	uint8_t buf[OUTBUF_SIZE];
};

static void *outbuf_thread(void *opaque)
{
	struct outbuf *ob = opaque;

	pthread_mutex_lock(&ob->lock);
	for (;;) {
		size_t chunk;
		int fd;
		ssize_t n;

		while (!ob->count && !ob->closing) {
			ob->waiting = true;
			pthread_cond_wait(&ob->data, &ob->lock);
			ob->waiting = false;
		}
		if (!ob->count)
			break;
		if (!ob->closing && ob->count < OUTBUF_SIZE / 2) {
			/* let a burst accumulate: one write per few ms, not
			 * one wake-up per byte */
			pthread_mutex_unlock(&ob->lock);
			usleep(OUTBUF_BATCH_US);
			pthread_mutex_lock(&ob->lock);
		}
		chunk = ob->count;
		if (chunk > OUTBUF_SIZE - ob->head)
			chunk = OUTBUF_SIZE - ob->head;
		fd = ob->fd;
		pthread_mutex_unlock(&ob->lock);
		n = fd >= 0 ? write(fd, ob->buf + ob->head, chunk)
			    : (ssize_t)chunk;
		pthread_mutex_lock(&ob->lock);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			/* the reader went away: drop what it cannot take */
			n = chunk;
		}
		ob->head = (ob->head + n) % OUTBUF_SIZE;
		ob->count -= n;
		pthread_cond_broadcast(&ob->space);
	}
	pthread_mutex_unlock(&ob->lock);
	return NULL;
}

struct outbuf *outbuf_create(int fd)
{
	struct outbuf *ob = calloc(1, sizeof(*ob));

	if (!ob)
		return NULL;
	ob->fd = fd;
	pthread_mutex_init(&ob->lock, NULL);
	pthread_cond_init(&ob->data, NULL);
	pthread_cond_init(&ob->space, NULL);
	if (pthread_create(&ob->thread, NULL, outbuf_thread, ob)) {
		free(ob);
		return NULL;
	}
	ob->thread_started = true;
	return ob;
}

void outbuf_put(struct outbuf *ob, const void *data, size_t len)
{
	const uint8_t *bytes = data;

	pthread_mutex_lock(&ob->lock);
	while (len) {
		size_t tail, room;

		while (ob->count == OUTBUF_SIZE && !ob->closing)
			pthread_cond_wait(&ob->space, &ob->lock);
		if (ob->closing)
			break;
		tail = (ob->head + ob->count) % OUTBUF_SIZE;
		room = OUTBUF_SIZE - ob->count;
		if (room > OUTBUF_SIZE - tail)
			room = OUTBUF_SIZE - tail;
		if (room > len)
			room = len;
		memcpy(ob->buf + tail, bytes, room);
		ob->count += room;
		bytes += room;
		len -= room;
		if (ob->waiting)
			pthread_cond_signal(&ob->data);
	}
	pthread_mutex_unlock(&ob->lock);
}

void outbuf_set_fd(struct outbuf *ob, int fd)
{
	pthread_mutex_lock(&ob->lock);
	ob->fd = fd;
	pthread_mutex_unlock(&ob->lock);
}

void outbuf_destroy(struct outbuf *ob)
{
	if (!ob)
		return;
	pthread_mutex_lock(&ob->lock);
	ob->closing = true;
	pthread_cond_broadcast(&ob->data);
	pthread_cond_broadcast(&ob->space);
	pthread_mutex_unlock(&ob->lock);
	/* the thread drains what is left before it ends */
	if (ob->thread_started)
		pthread_join(ob->thread, NULL);
	pthread_cond_destroy(&ob->data);
	pthread_cond_destroy(&ob->space);
	pthread_mutex_destroy(&ob->lock);
	free(ob);
}

// SPDX-License-Identifier: MIT
/*
 * --display sdl: the guest's screen in a window, through SDL2.  SDL draws
 * (a texture scaled to the window with the aspect kept, as VirtualBox's
 * scaled mode) and delivers the host's keys and mouse; this file maps
 * them to the input API: keys by their position on the keyboard (SDL's
 * scan codes, which are USB usages) to the X11 keysym of the key at that
 * place on a US keyboard, then through keymap.c to the PC scan code, so
 * the guest applies its own layout as it does on real hardware; the
 * mouse to the USB tablet at its place on the screen (the guest's pointer
 * stays under the host's), or without a tablet as the PS/2 mouse's
 * relative motion in guest pixels.
 *
 * SDL's own signal handlers are turned off: imgvm's signal thread owns
 * SIGINT and SIGTERM.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/display/sdl.h"

#ifdef IMGVM_SDL

#include <SDL.h>

#include "vmm/input.h"

struct sdl_window {
	SDL_Window *window;
	SDL_Renderer *renderer;
	SDL_Texture *texture;
	unsigned width, height;
	struct sdl_window_options opt;
	char *title;
	unsigned buttons;
	int x, y; /* the pointer, in guest pixels */
	bool input_seen;
};

/* SDL scan code (USB usage) -> X11 keysym of the US key there */
static uint32_t sdl_keysym(SDL_Scancode code)
{
	static const uint32_t keys[SDL_NUM_SCANCODES] = {
		[SDL_SCANCODE_RETURN] = 0xff0d,
		[SDL_SCANCODE_ESCAPE] = 0xff1b,
		[SDL_SCANCODE_BACKSPACE] = 0xff08,
		[SDL_SCANCODE_TAB] = 0xff09,
		[SDL_SCANCODE_SPACE] = ' ',
		[SDL_SCANCODE_MINUS] = '-',
		[SDL_SCANCODE_EQUALS] = '=',
		[SDL_SCANCODE_LEFTBRACKET] = '[',
		[SDL_SCANCODE_RIGHTBRACKET] = ']',
		[SDL_SCANCODE_BACKSLASH] = '\\',
		[SDL_SCANCODE_NONUSHASH] = '\\',
		[SDL_SCANCODE_SEMICOLON] = ';',
		[SDL_SCANCODE_APOSTROPHE] = '\'',
		[SDL_SCANCODE_GRAVE] = '`',
		[SDL_SCANCODE_COMMA] = ',',
		[SDL_SCANCODE_PERIOD] = '.',
		[SDL_SCANCODE_SLASH] = '/',
		[SDL_SCANCODE_CAPSLOCK] = 0xffe5,
		[SDL_SCANCODE_F11] = 0xffc8,
		[SDL_SCANCODE_F12] = 0xffc9,
		[SDL_SCANCODE_PRINTSCREEN] = 0xff61,
		[SDL_SCANCODE_SCROLLLOCK] = 0xff14,
		[SDL_SCANCODE_INSERT] = 0xff63,
		[SDL_SCANCODE_HOME] = 0xff50,
		[SDL_SCANCODE_PAGEUP] = 0xff55,
		[SDL_SCANCODE_DELETE] = 0xffff,
		[SDL_SCANCODE_END] = 0xff57,
		[SDL_SCANCODE_PAGEDOWN] = 0xff56,
		[SDL_SCANCODE_RIGHT] = 0xff53,
		[SDL_SCANCODE_LEFT] = 0xff51,
		[SDL_SCANCODE_DOWN] = 0xff54,
		[SDL_SCANCODE_UP] = 0xff52,
		[SDL_SCANCODE_NUMLOCKCLEAR] = 0xff7f,
		[SDL_SCANCODE_KP_DIVIDE] = 0xffaf,
		[SDL_SCANCODE_KP_MULTIPLY] = 0xffaa,
		[SDL_SCANCODE_KP_MINUS] = 0xffad,
		[SDL_SCANCODE_KP_PLUS] = 0xffab,
		[SDL_SCANCODE_KP_ENTER] = 0xff8d,
		[SDL_SCANCODE_KP_0] = 0xffb0,
		[SDL_SCANCODE_KP_PERIOD] = 0xffae,
		[SDL_SCANCODE_APPLICATION] = 0xff67,
		[SDL_SCANCODE_LCTRL] = 0xffe3,
		[SDL_SCANCODE_LSHIFT] = 0xffe1,
		[SDL_SCANCODE_LALT] = 0xffe9,
		[SDL_SCANCODE_LGUI] = 0xffeb,
		[SDL_SCANCODE_RCTRL] = 0xffe4,
		[SDL_SCANCODE_RSHIFT] = 0xffe2,
		[SDL_SCANCODE_RALT] = 0xffea,
		[SDL_SCANCODE_RGUI] = 0xffec,
	};

	if (code >= SDL_SCANCODE_A && code <= SDL_SCANCODE_Z)
		return 'a' + (code - SDL_SCANCODE_A);
	if (code >= SDL_SCANCODE_1 && code <= SDL_SCANCODE_9)
		return '1' + (code - SDL_SCANCODE_1);
	if (code == SDL_SCANCODE_0)
		return '0';
	if (code >= SDL_SCANCODE_F1 && code <= SDL_SCANCODE_F10)
		return 0xffbe + (code - SDL_SCANCODE_F1);
	if (code >= SDL_SCANCODE_KP_1 && code <= SDL_SCANCODE_KP_9)
		return 0xffb1 + (code - SDL_SCANCODE_KP_1);
	if (code < 0 || code >= SDL_NUM_SCANCODES)
		return 0;
	return keys[code];
}

bool sdl_window_available(void)
{
	return true;
}

static int sdl_make_texture(struct sdl_window *win, unsigned width,
			    unsigned height)
{
	if (win->texture)
		SDL_DestroyTexture(win->texture);
	/* bytes R, G, B, unused in memory */
	win->texture = SDL_CreateTexture(win->renderer,
					 SDL_BYTEORDER == SDL_LIL_ENDIAN
						 ? SDL_PIXELFORMAT_XBGR8888
						 : SDL_PIXELFORMAT_RGBX8888,
					 SDL_TEXTUREACCESS_STREAMING, width,
					 height);
	if (!win->texture)
		return -ENOMEM;
	win->width = width;
	win->height = height;
	SDL_RenderSetLogicalSize(win->renderer, width, height);
	return 0;
}

struct sdl_window *sdl_window_create(const struct sdl_window_options *opt,
				     unsigned width, unsigned height, char *err,
				     size_t errlen)
{
	struct sdl_window *win = calloc(1, sizeof(*win));

	if (!win) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	win->opt = *opt;
	win->title = strdup(opt->title ? opt->title : "imgvm");
	SDL_SetHint(SDL_HINT_NO_SIGNAL_HANDLERS, "1");
	/* smooth scaling when the window is not the guest's size */
	SDL_SetHint(SDL_HINT_RENDER_SCALE_QUALITY, "linear");
	if (!win->title || SDL_InitSubSystem(SDL_INIT_VIDEO)) {
		snprintf(err, errlen, "--display sdl: %s",
			 win->title ? SDL_GetError() : "out of memory");
		free(win->title);
		free(win);
		return NULL;
	}
	win->window = SDL_CreateWindow(win->title, SDL_WINDOWPOS_UNDEFINED,
				       SDL_WINDOWPOS_UNDEFINED, width, height,
				       SDL_WINDOW_RESIZABLE);
	if (win->window)
		win->renderer = SDL_CreateRenderer(win->window, -1, 0);
	if (!win->renderer || sdl_make_texture(win, width, height)) {
		snprintf(err, errlen, "--display sdl: %s", SDL_GetError());
		sdl_window_destroy(win);
		return NULL;
	}
	return win;
}

void sdl_window_destroy(struct sdl_window *win)
{
	if (!win)
		return;
	if (win->texture)
		SDL_DestroyTexture(win->texture);
	if (win->renderer)
		SDL_DestroyRenderer(win->renderer);
	if (win->window)
		SDL_DestroyWindow(win->window);
	SDL_QuitSubSystem(SDL_INIT_VIDEO);
	free(win->title);
	free(win);
}

static void sdl_present(struct sdl_window *win)
{
	SDL_SetRenderDrawColor(win->renderer, 0, 0, 0, 255);
	SDL_RenderClear(win->renderer);
	SDL_RenderCopy(win->renderer, win->texture, NULL, NULL);
	SDL_RenderPresent(win->renderer);
}

void sdl_window_resize(struct sdl_window *win, const uint32_t *pixels,
		       unsigned width, unsigned height)
{
	Uint32 flags = SDL_GetWindowFlags(win->window);

	if (sdl_make_texture(win, width, height))
		return;
	/* a window the user has not maximised takes the new mode's size */
	if (!(flags & (SDL_WINDOW_MAXIMIZED | SDL_WINDOW_FULLSCREEN)))
		SDL_SetWindowSize(win->window, width, height);
	sdl_window_changed(win, pixels, 0, 0, width, height);
}

void sdl_window_changed(struct sdl_window *win, const uint32_t *pixels,
			unsigned x, unsigned y, unsigned width, unsigned height)
{
	SDL_Rect rect = { (int)x, (int)y, (int)width, (int)height };

	if (!win->texture || x + width > win->width || y + height > win->height)
		return;
	SDL_UpdateTexture(win->texture, &rect,
			  pixels + (size_t)y * win->width + x,
			  (int)(win->width * 4));
	sdl_present(win);
}

static void sdl_key(struct sdl_window *win, const SDL_KeyboardEvent *key)
{
	uint32_t keysym = sdl_keysym(key->keysym.scancode);

	win->input_seen = true;
	/* held keys repeat as a PC keyboard's typematic makes do */
	if (keysym && win->opt.kbc)
		input_key_keysym(win->opt.kbc, keysym,
				 key->type == SDL_KEYDOWN);
}

static void sdl_mouse(struct sdl_window *win, const SDL_Event *ev)
{
	int dx = 0, dy = 0, wheel = 0;
	unsigned bit = 0;

	win->input_seen = true;
	switch (ev->type) {
	case SDL_MOUSEMOTION:
		/* in guest pixels: SDL scales to the logical size */
		dx = ev->motion.xrel;
		dy = ev->motion.yrel;
		win->x = ev->motion.x;
		win->y = ev->motion.y;
		if (!dx && !dy)
			return;
		break;
	case SDL_MOUSEBUTTONDOWN:
	case SDL_MOUSEBUTTONUP:
		if (ev->button.button == SDL_BUTTON_LEFT)
			bit = INPUT_BUTTON_LEFT;
		else if (ev->button.button == SDL_BUTTON_MIDDLE)
			bit = INPUT_BUTTON_MIDDLE;
		else if (ev->button.button == SDL_BUTTON_RIGHT)
			bit = INPUT_BUTTON_RIGHT;
		else
			return;
		win->x = ev->button.x;
		win->y = ev->button.y;
		if (ev->type == SDL_MOUSEBUTTONDOWN)
			win->buttons |= bit;
		else
			win->buttons &= ~bit;
		break;
	case SDL_MOUSEWHEEL:
		/* SDL: positive away from the user */
		wheel = ev->wheel.y > 0 ? -1 : ev->wheel.y < 0 ? 1 : 0;
		if (!wheel)
			return;
		break;
	default:
		return;
	}
	if (win->opt.tablet)
		usb_tablet_pointer_event(
			win->opt.tablet,
			input_absolute_position(win->x, win->width),
			input_absolute_position(win->y, win->height), wheel,
			win->buttons);
	else if (win->opt.kbc)
		i8042_mouse_event(win->opt.kbc, dx, dy, wheel, win->buttons);
}

static void sdl_close(struct sdl_window *win)
{
	const char *note =
		win->opt.on_close ? win->opt.on_close(win->opt.opaque) : "";
	char title[512];

	if (note && note[0]) {
		snprintf(title, sizeof(title), "%s (%s)", win->title, note);
		SDL_SetWindowTitle(win->window, title);
	}
}

static void sdl_handle(struct sdl_window *win, const SDL_Event *ev)
{
	switch (ev->type) {
	case SDL_KEYDOWN:
	case SDL_KEYUP:
		sdl_key(win, &ev->key);
		break;
	case SDL_MOUSEMOTION:
	case SDL_MOUSEBUTTONDOWN:
	case SDL_MOUSEBUTTONUP:
	case SDL_MOUSEWHEEL:
		sdl_mouse(win, ev);
		break;
	case SDL_WINDOWEVENT:
		/* (SDL_QUIT that follows the last window's close is the
		 * same click) */
		if (ev->window.event == SDL_WINDOWEVENT_CLOSE)
			sdl_close(win);
		else if (ev->window.event == SDL_WINDOWEVENT_EXPOSED ||
			 ev->window.event == SDL_WINDOWEVENT_SIZE_CHANGED)
			sdl_present(win);
		break;
	default:
		break;
	}
}

void sdl_window_poll(struct sdl_window *win, long timeout_us)
{
	SDL_Event ev;
	int ms = (int)((timeout_us + 999) / 1000);

	/* SDL waits on the display server's connection (no polling) */
	if (!SDL_WaitEventTimeout(&ev, ms))
		return;
	do
		sdl_handle(win, &ev);
	while (SDL_PollEvent(&ev));
}

bool sdl_window_visible(const struct sdl_window *win)
{
	Uint32 flags = SDL_GetWindowFlags(win->window);

	return (flags & SDL_WINDOW_SHOWN) &&
	       !(flags & (SDL_WINDOW_HIDDEN | SDL_WINDOW_MINIMIZED));
}

bool sdl_window_input_seen(struct sdl_window *win)
{
	bool seen = win->input_seen;

	win->input_seen = false;
	return seen;
}

#else /* built without SDL2 */

bool sdl_window_available(void)
{
	return false;
}

struct sdl_window *sdl_window_create(const struct sdl_window_options *opt,
				     unsigned width, unsigned height, char *err,
				     size_t errlen)
{
	(void)opt;
	(void)width;
	(void)height;
	snprintf(err, errlen,
		 "--display sdl: this imgvm was built without SDL2 "
		 "(install libsdl2-dev and rebuild)");
	return NULL;
}

void sdl_window_destroy(struct sdl_window *win)
{
	(void)win;
}

void sdl_window_resize(struct sdl_window *win, const uint32_t *pixels,
		       unsigned width, unsigned height)
{
	(void)win;
	(void)pixels;
	(void)width;
	(void)height;
}

void sdl_window_changed(struct sdl_window *win, const uint32_t *pixels,
			unsigned x, unsigned y, unsigned width, unsigned height)
{
	(void)win;
	(void)pixels;
	(void)x;
	(void)y;
	(void)width;
	(void)height;
}

void sdl_window_poll(struct sdl_window *win, long timeout_us)
{
	(void)win;
	(void)timeout_us;
}

bool sdl_window_visible(const struct sdl_window *win)
{
	(void)win;
	return false;
}

bool sdl_window_input_seen(struct sdl_window *win)
{
	(void)win;
	return false;
}

#endif

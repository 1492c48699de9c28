// SPDX-License-Identifier: MIT
/*
 * The characters of a VGA text screen as UTF-8, through code page 437
 * (the IBM PC's character set, which the VGA's ROM fonts draw).  Control
 * positions 0x01-0x1F show the PC's graphic symbols; 0x00 and 0xFF are
 * blanks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/display/render.h"

static const char *const cp437[256] = {
	" ", "☺", "☻", "♥", "♦", "♣", "♠",  "•", "◘",  "○", "◙", "♂", "♀", "♪",
	"♫", "☼", "►", "◄", "↕", "‼", "¶",  "§", "▬",  "↨", "↑", "↓", "→", "←",
	"∟", "↔", "▲", "▼", " ", "!", "\"", "#", "$",  "%", "&", "'", "(", ")",
	"*", "+", ",", "-", ".", "/", "0",  "1", "2",  "3", "4", "5", "6", "7",
	"8", "9", ":", ";", "<", "=", ">",  "?", "@",  "A", "B", "C", "D", "E",
	"F", "G", "H", "I", "J", "K", "L",  "M", "N",  "O", "P", "Q", "R", "S",
	"T", "U", "V", "W", "X", "Y", "Z",  "[", "\\", "]", "^", "_", "`", "a",
	"b", "c", "d", "e", "f", "g", "h",  "i", "j",  "k", "l", "m", "n", "o",
	"p", "q", "r", "s", "t", "u", "v",  "w", "x",  "y", "z", "{", "|", "}",
	"~", "⌂", "Ç", "ü", "é", "â", "ä",  "à", "å",  "ç", "ê", "ë", "è", "ï",
	"î", "ì", "Ä", "Å", "É", "æ", "Æ",  "ô", "ö",  "ò", "û", "ù", "ÿ", "Ö",
	"Ü", "¢", "£", "¥", "₧", "ƒ", "á",  "í", "ó",  "ú", "ñ", "Ñ", "ª", "º",
	"¿", "⌐", "¬", "½", "¼", "¡", "«",  "»", "░",  "▒", "▓", "│", "┤", "╡",
	"╢", "╖", "╕", "╣", "║", "╗", "╝",  "╜", "╛",  "┐", "└", "┴", "┬", "├",
	"─", "┼", "╞", "╟", "╚", "╔", "╩",  "╦", "╠",  "═", "╬", "╧", "╨", "╤",
	"╥", "╙", "╘", "╒", "╓", "╫", "╪",  "┘", "┌",  "█", "▄", "▌", "▐", "▀",
	"α", "ß", "Γ", "π", "Σ", "σ", "µ",  "τ", "Φ",  "Θ", "Ω", "δ", "∞", "φ",
	"ε", "∩", "≡", "±", "≥", "≤", "⌠",  "⌡", "÷",  "≈", "°", "∙", "·", "√",
	"ⁿ", "²", "■", " ",
};

int render_text(struct vga *vga, char **text)
{
	struct vga_scanout s;
	uint32_t vram_size;
	const uint8_t *vram = vga_vram(vga, &vram_size);
	size_t cap, len = 0;
	char *out;

	*text = NULL;
	vga_get_scanout(vga, &s);
	if (s.kind != VGA_SCANOUT_TEXT)
		return -ENOTSUP;
	/* at most 3 bytes a character, and a newline a row */
	cap = (size_t)s.rows * (s.cols * 3 + 1) + 1;
	out = malloc(cap);
	if (!out)
		return -ENOMEM;
	for (unsigned row = 0; row < s.rows; row++) {
		size_t last_visible = len;

		for (unsigned col = 0; col < s.cols; col++) {
			uint64_t cell = (uint64_t)s.start +
					(uint64_t)row * s.line_bytes +
					col * 4ull;
			uint8_t ch = cell < vram_size ? vram[cell] : 0;
			const char *u = cp437[ch];
			size_t n = strlen(u);

			memcpy(out + len, u, n);
			len += n;
			if (strcmp(u, " "))
				last_visible = len;
		}
		len = last_visible;
		out[len++] = '\n';
	}
	out[len] = '\0';
	*text = out;
	return 0;
}

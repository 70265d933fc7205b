"""Word lists the generated catalogue builds titles and people from.

Title lists are kept sorted so that a title built from the digits of a number in mixed radix
sorts exactly like the number (see :func:`medianest.simulators.data.sortable_title`).
"""

from __future__ import annotations


def _words(text: str) -> list[str]:
    return text.split()


ADJECTIVES: tuple[str, ...] = tuple(
    sorted(
        _words(
            """Amber Ancient Bitter Brave Bright Broken Burning Cold Copper Crimson Crystal Dark
        Deep
        Distant Electric Empty Endless Fading Fallen Final Forgotten Frozen Gentle Glass Golden
        Grand Green Hidden Hollow Iron Last Lonely Lost Lucky Midnight Mystic Northern Pale
        Perfect Quiet Radiant Restless Rising Savage Scarlet Secret Shattered Silent Silver
        Sleeping Southern Stolen Strange Sudden Sunken Twisted Velvet Violent Wandering Wicked
        Wild Winter Wooden Young"""
        )
    )
)

NOUNS: tuple[str, ...] = tuple(
    sorted(
        _words(
            """Anchor Archive Bridge Canyon Castle Circle City Coast Compass Crown Desert Dream Echo
        Empire Engine Falcon Field Fire Forest Frontier Garden Ghost Harbor Heart Horizon Hunter
        Island Kingdom Lantern Legacy Letter Light Machine Mirror Moon Mountain Night Ocean
        Orchard Palace Passage Prophet Queen Rain River Road Shadow Signal Sky Star Storm
        Stranger Summer Sun Temple Thunder Tide Tower Valley Voyage Wall Wind Wolf World"""
        )
    )
)

MOVIE_SUFFIXES: tuple[str, ...] = (
    "",
    *sorted(
        _words(
            """Awakening Chronicles Dawn Descent Endgame Exodus Genesis Infinity Judgment Legacy
        Nemesis Odyssey Origins Paradox Protocol Quest Reborn Reckoning Redux Requiem
        Resurrection Returns Revenge Revolution Rising Salvation Unleashed Uprising Vendetta
        Zero Aftermath"""
        )
    ),
)

SHOW_SUFFIXES: tuple[str, ...] = (
    "",
    *sorted(
        _words(
            """Academy Agency Chronicles Club County Diaries Division Family Files Heights Hospital
        House Lane Law Legends Motel Patrol Precinct Project Ranch Society Squad Station Stories
        Street Tales Team Town Trail Unit Watch"""
        )
    ),
)

GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Family",
    "Fantasy",
    "History",
    "Horror",
    "Mystery",
    "Romance",
    "Science Fiction",
    "Thriller",
    "War",
    "Western",
)

FIRST_NAMES: tuple[str, ...] = tuple(
    _words(
        """Ada Alan Bea Carl Dana Eli Eva Finn Gus Hana Ira Jo Kai Lea Max Mia Ned Noa Oli Pia Quin
    Rae Sam Tia Uma Vic Wes Xia Yan Zoe"""
    )
)

LAST_NAMES: tuple[str, ...] = tuple(
    _words(
        """Abbott Baker Castro Diaz Ellis Fischer Garcia Hughes Ito Jensen Kowalski Larsen Moreau
    Novak Okafor Park Quinn Rossi Silva Tanaka Ueda Varga Weber Young Zimmer"""
    )
)

STUDIOS: tuple[str, ...] = (
    "Northlight Pictures",
    "Harbor Films",
    "Blue Lantern Studios",
    "Meridian Entertainment",
    "Copperfield Media",
    "Silver Fern Productions",
)

NETWORKS: tuple[str, ...] = ("NBS", "Channel 9", "StreamCo", "HBX", "Northwave TV", "AMX")

COUNTRIES: tuple[str, ...] = ("United States of America", "United Kingdom", "France", "Japan")

CONTENT_RATINGS: tuple[str, ...] = ("G", "PG", "PG-13", "R", "TV-14", "TV-MA")

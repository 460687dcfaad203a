"""Prompt intent: which kind of model a portrait prompt needs, by transparent weighted rules.

`classify()` reads a prompt (the positive prompt only: words after `--no` never reach it) and answers
one intent from `INTENTS`, with a reason in plain words for users and the cue phrases that decided it.

How it decides
--------------
Four cue families, each a list of phrases with a weight and a "why":

* **text** – the image must show readable text: name tags, captions, titles, signs that say something,
  quoted text next to a text word (says / reads / written / title ...), jersey numbers.
* **style** – a non-photographic medium: paintings, drawings, anime, cartoons, 3D renders, prints,
  "in the style of <painter>".
* **studio** – a tightly specified, controlled setup: passport / ID photos, plain or seamless backdrops,
  catalog shots, "exactly", "must", exact framing ("centered, head and shoulders").
* **photo** – lens, light and film language (85mm, golden hour, Portra); these never win on their own
  (photoreal is the fallback) but they name the reason and slightly discount a weak style cue.

A family "fires" when its cue weights sum to at least 1.0. A strong cue (1.5) fires alone, a medium
cue (1.0) fires alone, weak cues (0.25-0.5) need company. Precedence, highest first:

    identity (any @name, characters or a reference)
    > literal (readable text)            - text must be legible whatever the medium
    > stylized                           - a watercolor on a plain backdrop is still a watercolor
    > literal (controlled studio setup)
    > photoreal                          - everything else

A cue does not count when it is negated ("no text", "not a painting", "without lettering": a negator
up to three words before it in the same clause), nor when the context makes it a subject rather than a
medium ("an anime fan", "a comic book store", "looking at a watercolor", "a man painting a fence",
"a charcoal suit", "Rembrandt lighting", "a sign language interpreter").

One judgement call: a realism qualifier on a 3D render ("photorealistic 3D render", "unreal engine,
hyperrealistic skin") asks for the realistic look, which a realism-first model serves best, so render
cues are dropped when a realism word is present. A painting stays a painting however realistic.

Everything is precompiled at import; `classify()` does no I/O and takes a few tens of microseconds.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import NamedTuple

INTENTS: tuple[str, ...] = ("photoreal", "literal", "identity", "stylized")

# Family thresholds and weights (see the module docstring).
_FIRE = 1.0
_STRONG = 1.5
_MEDIUM = 1.0
_WEAK = 0.5
_FAINT = 0.25
# Quoted text beside a text word is the surest text cue: weighted above the rest so it leads the reason.
_QUOTED_TEXT = 2.0
# A photographic cue ("85mm", "photo of") discounts the style score by this much, once: enough to keep
# "painterly light, 85mm" photoreal, never enough to overturn an explicit medium like "anime".
_PHOTO_DISCOUNT = 0.5

_PHOTOREAL_DEFAULT = "photoreal: a realism-first portrait (no text, style or character asked for)"


@dataclass(frozen=True)
class IntentGuess:
    """The intent of a prompt, why (in words fit for users), and the cue phrases that decided it."""

    intent: str
    reason: str
    matched: tuple[str, ...]


@dataclass(frozen=True)
class _Cue:
    pattern: str
    weight: float
    why: str = ""
    # "verb": a bare painting/drawing that may be an activity ("a man painting a fence").
    # "render": a 3D/CGI cue that a realism word overrides. "style_of": look at who follows.
    flag: str = ""
    # Per-cue suppressors, tried against the text right after / right before the match.
    after: str = ""
    before: str = ""


class _Hit(NamedTuple):
    """One cue found in a prompt (a NamedTuple: made per match, so it must be cheap)."""

    phrase: str
    weight: float
    why: str
    flag: str
    start: int


# --- cue tables -------------------------------------------------------------------------------------
# Patterns run over a normalized copy: lowercase, hyphens/underscores as spaces, punctuation spaced out,
# single spaces, quoted spans replaced by `qtextN` placeholders. All cues of all families go into one
# scanner (below) that takes matches left to right without overlap; where several cues match at one
# position the longest wins ("oil painting" over "painting", "poster art" over "poster"). A phrase that
# fits several cues belongs to the first listed: families in precedence order text, style, studio, photo.

_PAINTING = "asks for a painting"
# "a watercolor-blue scarf", "ink-black night": a medium word used as a colour.
_COLOUR_WORDS = r"blue|green|red|pink|purple|black|grey|gray|white|yellow|orange|brown"
_DRAWING = "asks for a drawing"
_ANIME = "asks for anime/manga"
_RENDER = "asks for a 3D render"
_TOON = "asks for a cartoon/comic look"
_ILLUSTRATION = "asks for an illustration"
_ARTIST = "asks for an artist's style"
_CRAFT = "asks for a print or craft medium"
_PIXEL = "asks for pixel/low-poly/vector art"

# Painters and illustrators whose names are styles. Deliberately no names that are also common first or
# family names (Turner, Raphael, Hopper...): "in the style of <name>" still catches those.
_ARTISTS = (
    r"van gogh|klimt|mucha|picasso|rembrandt|vermeer|caravaggio|da vinci|monet|renoir|degas|matisse|"
    r"warhol|lichtenstein|frida kahlo|hokusai|hiroshige|miyazaki|moebius|norman rockwell|egon schiele|"
    r"schiele|modigliani|botticelli|basquiat|magritte|leyendecker|frazetta|rutkowski|artgerm|loish|"
    r"kuvshinov|wlop|bouguereau|c[ée]zanne|gauguin|seurat|hockney|sargent|waterhouse|toulouse lautrec|"
    r"makoto shinkai|beatrix potter|mary blair|keith haring|banksy|dr seuss|tim burton|edvard munch"
)

_STYLE_CUES: tuple[_Cue, ...] = (
    # "in the style of ..." first: the code looks at who follows (a photographer keeps it photoreal).
    _Cue(
        r"in the (?:art )?style of|in the manner of|inspired by|reminiscent of|styled after",
        _MEDIUM,
        _ARTIST,
        "style_of",
    ),
    _Cue(rf"(?:{_ARTISTS})(?: style| inspired| esque)?", _STRONG, _ARTIST, after=r"lighting|light|lit\b"),
    # Paintings.
    _Cue(
        r"oil paint(?:ing|ings|ed)?|oil on (?:canvas|panel|board|linen)|oil portrait|in oils|oils? painting",
        _STRONG,
        _PAINTING,
    ),
    _Cue(r"water ?colou?r(?:ed|s)?(?: painting| paintings)?", _STRONG, _PAINTING, after=_COLOUR_WORDS),
    _Cue(r"gouache(?: painting)?|tempera(?: painting)?|encaustic|fresco(?:es)?", _STRONG, _PAINTING),
    _Cue(
        r"acrylics?(?: paint(?:ing|ings|ed)?)?", _STRONG, _PAINTING, after=r"nails?|glass|sheets?|panels?|box"
    ),
    _Cue(
        r"(?:impressionis[mt]|post impressionis[mt]|expressionis[mt]|fauvis[mt]|pointillis[mt]|cubis[mt]|"
        r"pre raphaelite)(?: painting| style| portrait)?",
        _STRONG,
        _PAINTING,
    ),
    _Cue(
        r"(?:renaissance|baroque|rococo|surrealist|realist|classical|academic|romantic|byzantine|medieval|"
        r"dutch golden age|flemish|digital|matte|folk art|naive|miniature|plein air|portrait|abstract|"
        r"ink|chinese|japanese|religious|icon) (?:painting|paintings|fresco|panel painting)",
        _STRONG,
        _PAINTING,
    ),
    _Cue(
        r"pop art|art nouveau|art deco (?:style|poster|illustration|portrait|painting|print|art)",
        _STRONG,
        _ARTIST,
    ),
    # Anime and manga.
    _Cue(
        r"anime|manga|manhwa|chibi|(?:studio )?ghibli|shonen|shoujo|shojo|webtoon|visual novel|vtuber",
        _STRONG,
        _ANIME,
    ),
    # 3D, CGI and toys.
    _Cue(
        r"3d (?:render(?:ed|ing|s)?|model(?:ed|led|s)?|character|art(?:work)?|style|animation|animated|"
        r"illustration|portrait|figure|sculpt(?:ure)?|cartoon|avatar|icon|printed figure)|cgi|"
        r"cg (?:render|art|character|portrait|animation)|"
        r"(?:octane|redshift|vray|v ray|arnold|keyshot|blender|cycles|eevee) render(?:ed|ing)?|"
        r"rendered in (?:blender|octane|unreal(?: engine)?|c4d|cinema 4d|maya|3d)|unreal engine(?: \d)?|"
        r"cinema 4d|c4d|zbrush",
        _STRONG,
        _RENDER,
        "render",
    ),
    _Cue(r"render(?:ed|ing|s)?", _MEDIUM, _RENDER, "render"),
    # A bare "3d" ("isometric 3d", "cute 3d"), but not the glasses or the printer.
    _Cue(
        r"3d",
        _MEDIUM,
        _RENDER,
        "render",
        after=r"glasses|printer|printed|printing|print|movie|film|cinema|scan|scanner|ultrasound|tv|imax",
    ),
    _Cue(
        r"pixar(?: style)?|disney (?:pixar|style|animation|animated|character|princess)|dreamworks|"
        r"claymation|clay (?:render|figure|model|sculpture|style|animation|character|figurine|doll)|"
        r"made (?:of|from|out of) clay|plasticine|stop motion|aardman|funko(?: pop)?|vinyl toy|"
        r"action figure|lego (?:style|minifig(?:ure)?|figure)",
        _STRONG,
        _RENDER,
    ),
    # Drawings.
    _Cue(
        r"(?:pencil|graphite|charcoal|colou?red pencil|crayon|pastel|oil pastel|chalk|cont[eé]|marker|"
        r"ballpoint|biro|pen|ink|silverpoint|red chalk|sanguine|line|contour|life|figure|courtroom|police|"
        r"fashion) "
        r"(?:drawing|drawings|sketch|sketches|portrait|study|illustration|art|rendering|on paper|shading)|"
        r"pen and ink|inked|line ?art|doodle|hand drawn|croquis|caricature|sketchbook (?:page|style)|"
        r"ink wash|sumi e|crosshatch(?:ed|ing)?",
        _STRONG,
        _DRAWING,
    ),
    _Cue(
        r"(?:drawn|sketched|painted|rendered|done|made|executed|coloured|colored) (?:in|with) (?:colou?red )?"
        r"(?:pencils?|charcoal|ink|crayons?|pastels?|chalk|graphite|markers?|water ?colou?rs?|gouache|oils?|"
        r"acrylics?|felt tips?)|in colou?red pencils?|in crayons?|in pastels|in graphite|"
        r"(?:hand )?painted (?:portrait|by|on canvas|in the style)|drawn (?:by|in the style|as a)",
        _STRONG,
        _DRAWING,
    ),
    _Cue(r"sketch(?:es|ed)?|drawing|drawings", _MEDIUM, _DRAWING, "verb"),
    # Cartoons, comics, pixel / vector art.
    _Cue(
        r"cartoon(?:s|ish|y)?|comics|comic (?:book|style|art|strip|panel|cover|illustration)|graphic novel|"
        r"webcomic|cel shad(?:ed|ing)|toon shad(?:ed|ing)|toon style|looney tunes|simpsons style|"
        r"south park style",
        _STRONG,
        _TOON,
    ),
    _Cue(
        r"pixel(?:ated)? art|pixel style|8 bit|16 bit|low poly|voxel(?: art)?|isometric illustration|"
        r"flat (?:vector|illustration|design)|vector (?:art|illustration|portrait|style|graphic|drawing)|"
        r"isometric(?: 3d| art| style| illustration)?|poster art|synthwave art|vaporwave art|"
        r"(?:propaganda|travel|soviet|wpa|constructivist|art deco|retro travel|vintage travel) posters?|"
        r"poster (?:illustration|style|design)",
        _STRONG,
        _PIXEL,
    ),
    # Illustration and prompt jargon for it.
    _Cue(
        r"illustrat(?:ion|ions|ed)|concept art|digital (?:art|artwork|illustration|drawing)|fan ?art|"
        r"(?:trending on )?artstation|deviantart|story ?book|children'?s book|picture book|key ?art|"
        r"splash art|character (?:design|sheet)|fantasy art|tarot card",
        _STRONG,
        _ILLUSTRATION,
    ),
    _Cue(
        r"(?:marble|bronze|stone|granite|wooden|wood|ceramic|porcelain|plaster|terracotta|jade|golden|gold|"
        r"ice|clay) (?:statue|bust|sculpture|figurine)s?|(?:statue|sculpture|bust) of|"
        r"as an? (?:\w+ ){0,2}(?:statue|sculpture|bust)",
        _STRONG,
        "asks for a sculpture",
    ),
    # Prints and crafts.
    _Cue(
        r"ukiyo e|woodblock(?: print)?|wood ?cut|linocut|lino print|etching|engraving|lithograph|"
        r"screen ?print|risograph|stained glass|mosaic|tapestry|paper ?cut(?:out)?|paper ?craft|origami|"
        r"collage|needle felted|embroidery portrait",
        _STRONG,
        _CRAFT,
    ),
    # Bare or softer words.
    _Cue(r"painting|paintings", _MEDIUM, _PAINTING, "verb"),
    _Cue(r"painterly|stylized|stylised|mural of|as a mural", _MEDIUM, "asks for a painted or stylized look"),
    _Cue(r"painted|animated|animation", _WEAK, "asks for a painted or animated look"),
    _Cue(
        r"brush ?strokes?|impasto|canvas texture|on canvas|halftone(?: dots)?|screentone|ben day dots|"
        r"flat colou?rs?|bold outlines?|thick outlines?|paper texture",
        _WEAK,
        "describes a painted or drawn surface",
    ),
)

_TEXT = "the image must show readable text"
_TEXT_SURFACE = (
    r"signs?|placards?|banners?|boards?|plaques?|shirts?|tees?|jerseys?|hoodies?|sweatshirts?|jackets?|caps?|"
    r"hats?|aprons?|mugs?|cups?|cakes?|badges?|tags?|labels?|cards?|covers?|posters?|billboards?|nameplates?|"
    r"plates?|screens?|walls?|doors?|notes?|envelopes?|books?|tattoos?|stickers?|bibs?|belts?|trophy|"
    r"trophies|medals?|banners?|shorts|uniforms?|helmets?|windows?|menus?|letters?|receipts?|tickets?|boxes|"
    r"box"
)

_TEXT_CUES: tuple[_Cue, ...] = (
    _Cue(
        r"name ?tags?|name ?badges?|name ?plates?|name cards?|place cards?|id badges?|"
        r"(?:with|showing|bearing|and) (?:the|his|her|their) names?",
        _STRONG,
        _TEXT,
    ),
    _Cue(
        r"captions?|captioned|subtitles?|subtitled|hand lettered|typography|typographic|typeface|"
        r"calligraphy|headlines?|masthead|tagline|slogan|inscriptions?|inscribed|"
        r"(?:engraved|embossed|stamped|printed|embroidered) with (?:the |a )?"
        r"(?:words?|text|name|letters?|qtext\d+)|monogram(?:med)?|speech bubbles?|thought bubbles?|"
        r"word balloons?|text overlay|nameplates?|initials|"
        r"(?:embroidered|printed|stitched|engraved|painted|written|handwritten|monogrammed|sewn) "
        r"(?:names?|initials|text|words?|slogan|numbers?|letters|lettering)|"
        r"names? (?:embroidered|printed|stitched|written|engraved|painted|sewn|spelled)",
        _STRONG,
        _TEXT,
    ),
    _Cue(
        r"title text|title card|titled|(?:with|and|bearing|under) (?:a |the )?title|the title|"
        r"title (?:at|on|across|in|reading|that|above|below)",
        _STRONG,
        _TEXT,
        after=r"fight|bout|match|belt|role|holder|defen[cs]e|track|sequence|race|winner|contender",
    ),
    _Cue(
        r"(?:with|bearing|showing|reads|says|reading|saying|of|spelling) the words?|the words?|"
        r"words? on (?:it|them)",
        _STRONG,
        _TEXT,
    ),
    _Cue(r"text (?:that|which|saying|reading|says|reads|on|across)|the text|with text", _STRONG, _TEXT),
    _Cue(
        rf"(?:{_TEXT_SURFACE}) (?:reading|that reads|that says|saying|which reads|which says)", _STRONG, _TEXT
    ),
    _Cue(
        r"(?:that|which) (?:says|reads|spells|said)|spelling|spells|spelt|spelled out",
        _STRONG,
        _TEXT,
        after="bee",
    ),
    _Cue(r"written (?:on|in|across|with|along|inside|under|above|below)", _STRONG, _TEXT),
    _Cue(
        r"magazine covers?|cover of (?:an? |the )?(?:[\w']+ )?magazine|on the cover of|"
        r"(?:vogue|time|gq|esquire|rolling stone|vanity fair|elle|forbes|"
        r"national geographic) (?:magazine )?cover",
        _STRONG,
        _TEXT,
    ),
    _Cue(
        r"license plate|number plate|race bib|bib number|jersey number|number \d+|#\d+|scoreboard|"
        r"(?:jersey|shirt|uniform|bib) with (?:the |a )?(?:name|number)",
        _STRONG,
        _TEXT,
    ),
    # A sign or placard someone holds is there to be read.
    _Cue(
        r"(?:holding|holds|hold|carrying|carries|raising|raises|waving|waves|holding up|holds up) "
        r"(?:(?:an?|the|his|her|their|some|two|three|a few|many|up) )?(?:[\w']+ )?"
        r"(?:signs?|placards?|picket signs?)",
        _MEDIUM,
        _TEXT,
    ),
    _Cue(
        r"placards?|signage|chalkboard menu|menu board|neon (?:lettering|letters|words|text)", _MEDIUM, _TEXT
    ),
    _Cue(r"labels?|labell?ed", _MEDIUM, _TEXT, before=r"record\s$"),
    # "lettering" the noun, not "a sign painter lettering a shop window".
    _Cue(r"lettering", _STRONG, _TEXT, after=r"an?|the|his|her|their|its|some"),
    _Cue(
        r"price tags?|price labels?|handwritten|hand written|(?:a |the )?quote (?:at|on|across|in|reading|"
        r"that|saying|below|above|under)|with a quote|motto|quotation",
        _MEDIUM,
        _TEXT,
    ),
    _Cue(r"text", _MEDIUM, _TEXT, after=r"messages?"),
    _Cue(
        r"signs?|banners?|billboards?|posters?|book covers?|album covers?|logos?|plaques?|marquee|"
        r"words|letters",
        _WEAK,
        _TEXT,
        after=r"language|languages|interpreter|boy|girl|child|children|of|painters?|makers?|posts?",
    ),
)

_STUDIO = "a tightly specified studio setup"
_COLOURS = (
    r"white|black|grey|gray|blue|light blue|pale blue|sky blue|navy|light grey|light gray|off white|beige|"
    r"cream|ivory|red|green|pink|yellow|orange|purple|teal|brown|tan"
)

_STUDIO_CUES: tuple[_Cue, ...] = (
    _Cue(
        r"passport (?:photos?|pictures?|photographs?|style|portraits?|headshots?)|"
        r"(?:id|identification|identity|visa|badge|id card|employee|staff|student id|security badge|"
        r"driver'?s license|drivers license|green card|residence permit) (?:photos?|pictures?|photographs?|"
        r"headshots?|portraits?)|mug ?shots?|booking photo|"
        r"(?:passport|visa|id card|identity card|driver'?s license) "
        r"(?:application|renewal|requirements?|specs?)|"
        r"for (?:an? |my |his |her |their )?(?:passport|visa|id card)",
        _STRONG,
        _STUDIO,
    ),
    _Cue(
        r"catalog(?:ue)? (?:shot|photo|image|picture|style|photography)|e ?commerce|ecommerce|"
        r"product (?:shot|photo|style|photography|image)|packshot|ghost mannequin|flat lay",
        _STRONG,
        _STUDIO,
    ),
    _Cue(
        r"seamless(?: (?:[\w]+ ){0,2}(?:backdrop|background|paper))?|"
        r"(?:plain|solid|uniform|flat|clean|blank|neutral|single colou?r|monochrome) (?:[\w]+ ){0,2}"
        r"(?:backdrop|background|wall)",
        _MEDIUM,
        _STUDIO,
    ),
    _Cue(r"exactly|precisely|must|has to be|have to be", _MEDIUM, _STUDIO),
    _Cue(r"passport|lookbook", _WEAK, _STUDIO),
    _Cue(rf"(?:{_COLOURS}) (?:\w+ )?(?:backdrop|background)", _WEAK, _STUDIO),
    _Cue(
        r"head and shoulders|head to (?:toe|waist)|cent(?:er|r)ed|center frame|dead center|"
        r"neutral expression|"
        r"(?:facing|looking (?:straight |directly )?(?:at|into)|face|faces) the camera(?: directly)?|"
        r"straight on|front (?:view|facing)|back views?|side view|profile view|three quarter view|"
        r"shoulders square|eye level|eyes open|mouth closed|arms (?:at|by) (?:his|her|their|the) sides?|"
        r"left to right|"
        r"(?:on|to) the (?:left|right)|(?:top|bottom|upper|lower) (?:left|right)(?: corner)?|"
        r"corporate (?:headshot|portrait)|professional headshot|linkedin(?: headshot)?|business headshot|"
        r"even lighting|evenly lit|flat lighting|in a row|no glasses|glasses off|without glasses",
        _WEAK,
        _STUDIO,
    ),
    _Cue(
        r"(?:two|three|four|five|six|seven|eight|nine|ten|\d+) (?:people|persons|women|men|kids|children|"
        r"cups|items|objects|books|candles|flowers|apples)|full body|full length|waist up|chest up|headshot|"
        rf"(?:{_COLOURS}|charcoal|khaki|olive) (?:suit|shirt|blouse|blazer|turtleneck|sweater|hoodie|"
        r"t shirt|tee|dress|jacket|coat|trousers|pants|tie|jeans|skirt|polo)",
        _FAINT,
        _STUDIO,
    ),
)

_PHOTO_CUES: tuple[_Cue, ...] = (
    _Cue(
        r"photo ?realistic|photoreal|hyper ?realistic|ultra ?realistic|hyper ?real|realistic|lifelike|"
        r"true to life|photographic|real life",
        _WEAK,
        "realism",
        "realism",
    ),
    _Cue(
        r"photos?|photograph(?:s|y|ed)?|snapshot|shot on|taken (?:on|with)|raw photo|dslr|mirrorless|"
        r"\d{2,3} ?mm(?: lens)?|f ?/ ?\d+(?:\.\d+)?|iso \d+|bokeh|(?:shallow )?depth of field|"
        r"canon(?: eos)?|nikon|leica|hasselblad|fujifilm|kodak|portra(?: \d+)?|ektar|ektachrome|kodachrome|"
        r"tri x|ilford|cinestill(?: \d+)?|film grain|grainy film|35mm film|analog film|polaroid",
        _WEAK,
        "photo",
    ),
    _Cue(
        r"golden hour|blue hour|window light|natural light|soft light|rim light|overcast(?: daylight)?|"
        r"daylight|studio lighting|softbox|rembrandt lighting|cinematic lighting|candid|editorial|"
        r"documentary|photojournalism|street photography|lifestyle|environmental portrait|skin texture|"
        r"visible pores|pores|freckles",
        _WEAK,
        "light",
    ),
)

# Who may follow "in the style of" without making it a painting: photographers, film-makers, photo words.
_PHOTO_STYLE = re.compile(
    r"\b(?:photo\w*|polaroid|film|movie|cinema\w*|camera|kodak|portra|fuji\w*|magnum|national geographic|"
    r"vogue|editorial|documentary|snapshot|yearbook|leibovitz|avedon|testino|mccurry|lindbergh|newton|"
    r"mapplethorpe|cartier bresson|maier|platon|lange|arbus|irving penn|penn|ritts|sally mann|schoeller|"
    r"salgado|gursky|eggleston|leiter|goldin|martin parr|tim walker|teller|crewdson|moriyama|kawauchi|"
    r"mcginley|wes anderson|kubrick|wong kar wai|deakins|lubezki|fincher|villeneuve|nolan|video|tv|"
    r"television|commercial|advert\w*|ad campaign|campaign|vhs|camcorder|selfie|instagram|paparazzi|news|"
    r"footage|still|stills|headshot|wedding|fashion shoot|catalog|lookbook)\b"
)

# --- context: negation and "the cue is a subject, not a medium" ----------------------------------------

# A negator up to three words before the cue, in the same clause (punctuation stops the window).
_NEGATED_BEFORE = re.compile(
    r" (?:no|not|without|never|avoid|avoiding|nor|non|zero|instead of|rather than|free of|minus)"
    r" (?:[\w']+ ){0,3}$"
)
_NEGATED_AFTER = re.compile(r" free\b")

# Style words that name a subject or an object in the scene: "anime fan", "watercolor artist",
# "comic book store", "looking at a watercolor", "dressed as an anime character", "pencil skirt".
_STYLE_SUBJECT_AFTER = re.compile(
    r" (?:fans?|fandom|conventions?|con|expos?|stores?|shops?|museums?|galler(?:y|ies)|exhibits?|"
    r"exhibitions?|collectors?|collections?|enthusiasts?|lovers?|nerds?|geeks?|clubs?|festivals?|artists?|"
    r"painters?|illustrators?|animators?|cartoonists?|teachers?|instructors?|class(?:es)?|lessons?|"
    r"conservators?|restorers?|restoration|dealers?|auctions?|thieves|thief|forgers?|forgery|"
    r"reenactors?|re enactors?|impersonators?|lookalikes?|look alikes?|tribute|biopic|"
    r"workshops?|students?|supplies|kits?|sets?|brush(?:es)?|pens?|pads?|palettes?|easels?|desks?|"
    r"tables?|tablets?|studios?|readers?|book ?store|merch(?:andise)?|figurines?|cosplay(?:ers?)?|costumes?|"
    r"t shirt|shirts?|hoodie|tattoos?|glasses|nails|skirts?|suits?|rooms?|workers?|rig|tycoon|magnate|"
    r"comedy|show|night|marathon|binge|screening|hanging|framed|on (?:the|a|her|his) wall|"
    r"(?:on|in) (?:an? |the )?(?:easel|frame|museum|gallery))\b"
)
_STYLE_SUBJECT_BEFORE = re.compile(
    r" (?:looking at|admiring|staring at|holding|holds|carrying|reading|reads|watching|watches|"
    r"selling|sells|buying|collecting|dressed (?:up )?as|cosplay(?:ing|er|ers)?(?: as)?|costume of|"
    r"in front of|next to|beside|behind|under|beneath|framed|hanging|visiting|visits|browsing|painting|"
    r"paints|drawing|draws|sketching|teaching|teaches|studying|signing|surrounded by|wearing|named|called) "
    r"(?:(?:an?|the|his|her|their|my|our|some|old|big|huge|large|small|framed|giant|unfinished|new|favorite|"
    r"favourite|vintage|stack of|pile of|few) ){0,2}(?:[\w']+ )?$"
)
# A bare "painting"/"drawing"/"sketch" used as a verb or by a person: "a man painting a fence",
# "a girl drawing", "sketching in the park".
_VERB_AFTER = re.compile(r" (?:an?|the|his|her|their|its|my|our|some|on|at|with|outside|outdoors)\b")
_VERB_BEFORE = re.compile(
    r" (?:man|woman|girl|boy|child|kid|artist|painter|person|people|he|she|they|who|is|are|was|"
    r"while|and|busy|enjoys|loves|spray|house|face|finger|body|sign|cave|landscape|ceiling) $"
)

# --- normalization -----------------------------------------------------------------------------------

# Quoted spans: "...", “...”, «...», ‘...’ and '...' (an apostrophe inside a word is not a quote).
# Every branch starts with its quote character (the look-behind comes after it) so sre can skip ahead.
_QUOTED = re.compile(
    r"\"([^\"\n]{1,120})\"|“([^”\n]{1,120})”|«([^»\n]{1,120})»|‘([^\n]{1,120}?)’(?!\w)|"
    r"'(?<![\w']')([^\n]{1,120}?)'(?!\w)"
)
_QUOTE_CHARS = ("'", '"', "“", "‘", "«")
# Hyphens and underscores become spaces ("name-tag", "cel_shaded"); punctuation gets spaces around it, so
# every word starts after a space (what the scanner looks for) and clause breaks stay visible. Chained
# `str.replace` of the characters present: ~1 µs, where a multi-character `str.translate` takes ~20.
_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    *((c, " ") for c in "-_‐‑‒–—"),
    *((c, f" {c} ") for c in ',;:!?()[]{}<>*+=&/\\|"“”«»'),
    ("’", "'"),
    ("`", "'"),
)
_MENTION = re.compile(r"(?<![\w@.])@(\w(?:[\w.-]*\w)?)")
# Text words that make a quoted span text to render (in the same clause, just before or after it).
# Includes every text surface (`_TEXT_SURFACE`): "'ENGINE 12' on his helmet".
_QUOTE_CONTEXT = re.compile(
    rf" (?:{_TEXT_SURFACE}|"
    r"says?|saying|said|reads?|reading|spell(?:s|ed|ing|t)?|writ(?:e|es|ten|ing)|titled?|text|captions?|"
    r"captioned|words?|letter(?:s|ing)|printed|print|engraved|embroidered|inscribed|stamped|painted|"
    r"labell?ed|labels?|signs?|badges?|tags?|banners?|posters?|covers?|logo|neon|plates?|t shirt|shirt|tee|"
    r"hoodie|jersey|mug|cake|card|board|sticker|tattoo(?:ed)?|headline|slogan|name|icing|spelled out|"
    r"quotes?|quotation|motto|message|phrase)(?!\w)"
)
_CLAUSE_END = re.compile(r"[,;.!?]")
_PLACEHOLDER = re.compile(r"qtext(\d+)")
# Unquoted upper-case text after a text verb in the original prompt: "a neon sign spelling OPEN".
# Found as upper-case words first (a charset prefix sre skips through quickly), then the verb before them.
_CAPS_VERBS = ("says", "saying", "reads", "spell", "written", "the word")
_CAPS_WORD = re.compile(r"[A-Z0-9][A-Z0-9&!?'.♥]*[A-Z0-9!?♥](?!\w)")
_CAPS_VERB_BEFORE = re.compile(
    r"\b(?:says|saying|reads|spells|spelling|spelled|spelt|written|the words?)[\s:,]+$"
)


# --- the scanner --------------------------------------------------------------------------------------
# One regex finds every cue of every family in a single pass. Written naively (one alternation of ~300
# phrases behind a `(?<!\w)` look-behind) it costs ~100 µs per prompt: sre tries every alternative at
# every position. Two tricks bring that to a few µs: the pattern starts with a literal space (every word of
# the normalized prompt follows one), so sre's literal-prefix search jumps from word start to word start;
# and the alternatives are folded into a trie of literal prefixes, so one failed character skips a whole
# subtree. Cues are identified afterwards, only for the few phrases found, by one memoized fullmatch.


def _structure(pattern: str) -> list[tuple[int, str, int]]:
    """(index, char, depth) of each `(`, `)` and `|` of a regex, skipping escapes and character classes.

    `depth` is the group depth after an opening and before a closing parenthesis.
    """
    found: list[tuple[int, str, int]] = []
    depth, i = 0, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i = pattern.index("]", i + 1) + 1
            continue
        if char == "(":
            depth += 1
            found.append((i, char, depth))
        elif char == ")":
            found.append((i, char, depth))
            depth -= 1
        elif char == "|":
            found.append((i, char, depth))
        i += 1
    return found


def _split_top(pattern: str) -> list[str]:
    """`a|b(?:c|d)|e` -> `["a", "b(?:c|d)", "e"]`: split on `|` outside groups and character classes."""
    parts, start = [], 0
    for i, char, depth in _structure(pattern):
        if char == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return parts


def _group_end(pattern: str) -> int:
    """Index of the `)` closing the group that opens at index 0."""
    for i, char, depth in _structure(pattern):
        if char == ")" and depth == 1:
            return i
    raise ValueError(f"unbalanced group in {pattern!r}")


def _expand_head(alternative: str) -> list[str]:
    """Distribute a leading group: `(?:a|b) c` -> `["a c", "b c"]`, `(?:a )?b` -> `["a b", "b"]`.

    So that every alternative starts with a literal and joins the trie: one left outside it would only be
    tried after a shorter literal one had already matched ("painted" before "(?:hand )?painted portrait").
    """
    if not alternative.startswith("(?:"):
        return [alternative]
    end = _group_end(alternative)
    rest = alternative[end + 1 :]
    optional = rest.startswith("?") and rest[1:2] not in ("?", "+")
    if optional:
        rest = rest[1:]
    elif rest[:1] in ("?", "*", "+", "{"):
        return [alternative]
    expanded = [out for inner in _split_top(alternative[3:end]) for out in _expand_head(inner + rest)]
    return expanded + _expand_head(rest) if optional else expanded


def _literal_head(alternative: str) -> bool:
    return (
        bool(alternative)
        and (alternative[0].isalnum() or alternative[0] in " '#")
        and alternative[1:2] not in ("?", "*", "+", "{")
    )


def _trie(alternatives: list[str]) -> str:
    """Fold alternatives sharing a literal first character, recursively, keeping their order."""
    groups: list[tuple[str, list[str]]] = []  # ("" for an alternative kept as it is)
    where: dict[str, int] = {}
    for alternative in alternatives:
        for item in _expand_head(alternative):
            if _literal_head(item):
                if item[0] not in where:
                    where[item[0]] = len(groups)
                    groups.append((item[0], []))
                groups[where[item[0]]][1].append(item[1:])
            else:
                groups.append(("", [item]))
    # Longer alternatives first among those sharing a prefix, so "poster art" (style) is tried before
    # "poster" (text): every alternative ends at a word boundary, so this approximates the longest match.
    groups.sort(key=lambda group: -max(len(item) for item in group[1]))
    parts = [re.escape(key) + _trie(items) if key else items[0] for key, items in groups]
    if len(parts) == 1 and groups[0][0]:
        return parts[0]
    return "(?:" + "|".join(parts) + ")"


# Every cue with its family, in precedence order (at one position the first family listed wins).
_CUES: tuple[tuple[str, _Cue], ...] = tuple(
    (family, cue)
    for family, cues in (
        ("text", _TEXT_CUES),
        ("style", _STYLE_CUES),
        ("studio", _STUDIO_CUES),
        ("photo", _PHOTO_CUES),
    )
    for cue in cues
)
_SCANNER = re.compile(" " + _trie([alt for _, cue in _CUES for alt in _split_top(cue.pattern)]) + r"(?!\w)")
# Which cue a found phrase is: one fullmatch over all cues, each its own named group, first in order wins.
_IDENTIFIER = re.compile("|".join(f"(?P<c{i}>{cue.pattern})" for i, (_, cue) in enumerate(_CUES)))
_CUE_AFTER = tuple(re.compile(rf" ?(?:{cue.after})") if cue.after else None for _, cue in _CUES)
_CUE_BEFORE = tuple(re.compile(rf"(?:{cue.before})") if cue.before else None for _, cue in _CUES)


@functools.lru_cache(maxsize=4096)
def _identify(phrase: str) -> int | None:
    """Index in `_CUES` of the first cue matching the whole phrase; memoized, phrases repeat a lot.

    The scanner is built from the cues, so one always matches; `None` only guards against a bug in the trie
    folding (the hit is then ignored rather than failing the request).
    """
    match = _IDENTIFIER.fullmatch(phrase)
    return int(match.lastgroup[1:]) if match is not None and match.lastgroup else None


def _normalize(prompt: str) -> tuple[str, list[str]]:
    """` ` + lowercase, hyphens as spaces, single spaces; quoted spans become `qtextN` (texts returned)."""
    quotes: list[str] = []

    def _mask(match: re.Match[str]) -> str:
        quotes.append(next(g for g in match.groups() if g is not None))
        return f" qtext{len(quotes) - 1} "

    if any(q in prompt for q in _QUOTE_CHARS):
        prompt = _QUOTED.sub(_mask, prompt)
    text = prompt.lower()
    for char, replacement in _REPLACEMENTS:
        if char in text:
            text = text.replace(char, replacement)
    # The leading space lets the scanner match at the very first word.
    return " " + " ".join(text.split()), quotes


def _negated(norm: str, start: int, end: int) -> bool:
    return bool(_NEGATED_BEFORE.search(norm, max(0, start - 48), start)) or bool(
        _NEGATED_AFTER.match(norm, end)
    )


@dataclass
class _Scan:
    hits: dict[str, list[_Hit]]
    dropped: list[str]


def _scan(norm: str) -> _Scan:
    """Every cue that counts, by family, and the phrases that were dropped (negated, or subjects)."""
    scan = _Scan({"text": [], "style": [], "studio": [], "photo": []}, [])
    for match in _SCANNER.finditer(norm):
        start, end = match.start() + 1, match.end()  # past the space the scanner starts on
        phrase = match.group()[1:]
        index = _identify(phrase)
        if index is None:
            continue
        family, cue = _CUES[index]
        if family == "photo":
            # Light and lens words only explain a photoreal answer; negation matters only for the realism
            # words, which override render cues ("not photorealistic, 3D render" stays a render).
            if cue.flag != "realism" or not _negated(norm, start, end):
                scan.hits[family].append(
                    _Hit(phrase.replace(" / ", "/"), cue.weight, cue.why, cue.flag, start)
                )
            continue
        window = max(0, start - 64)
        after_re, before_re = _CUE_AFTER[index], _CUE_BEFORE[index]
        suppressed = (
            (after_re is not None and after_re.match(norm, end) is not None)
            or (before_re is not None and before_re.search(norm[window:start]) is not None)
            or _negated(norm, start, end)
        )
        if not suppressed and family == "style":
            suppressed = bool(
                _STYLE_SUBJECT_AFTER.match(norm, end) or _STYLE_SUBJECT_BEFORE.search(norm, window, start)
            )
            if not suppressed and cue.flag == "verb":
                suppressed = bool(_VERB_AFTER.match(norm, end) or _VERB_BEFORE.search(norm, window, start))
            if not suppressed and cue.flag == "style_of":
                follow = norm[end : end + 48]
                stop = _CLAUSE_END.search(follow)
                follow = follow[: stop.start()] if stop else follow
                phrase = " ".join([phrase, *follow.split()[:3]])
                if _PHOTO_STYLE.search(follow):
                    # "in the style of Annie Leibovitz": a photographer's look is a photo cue.
                    scan.hits["photo"].append(_Hit(phrase, _WEAK, "photo", "", start))
                    continue
        if suppressed:
            scan.dropped.append(phrase)
        else:
            scan.hits[family].append(_Hit(phrase, cue.weight, cue.why, cue.flag, start))
    return scan


def _quote_hits(norm: str, quotes: list[str]) -> list[_Hit]:
    """Quoted text beside a text word ("a sign that reads 'VOTE'") is text to render; scare quotes are not."""
    hits: list[_Hit] = []
    for match in _PLACEHOLDER.finditer(norm):
        before = norm[max(0, match.start() - 40) : match.start()]
        cut = list(_CLAUSE_END.finditer(before))
        before = before[cut[-1].end() :] if cut else before
        after = norm[match.end() : match.end() + 28]
        stop = _CLAUSE_END.search(after)
        after = after[: stop.start()] if stop else after
        word = _QUOTE_CONTEXT.search(before) or _QUOTE_CONTEXT.search(after)
        if word is None:
            continue
        # Show the nearest text word before the quote, else the first after it.
        words = list(_QUOTE_CONTEXT.finditer(before))
        near = (words[-1] if words else word).group().strip()
        quoted = quotes[int(match.group(1))] if int(match.group(1)) < len(quotes) else ""
        hits.append(_Hit(f'{near} "{quoted}"', _QUOTED_TEXT, _TEXT, "", match.start()))
    return hits


def _caps_hits(prompt: str) -> list[_Hit]:
    """Upper-case words right after a text verb ("a neon sign spelling OPEN"), in the original casing."""
    hits: list[_Hit] = []
    for match in _CAPS_WORD.finditer(prompt):
        start = match.start()
        if (start and prompt[start - 1].isalnum()) or not any(c.isalpha() for c in match.group()):
            continue
        before = prompt[max(0, start - 24) : start].lower()
        if _CAPS_VERB_BEFORE.search(before):
            verb = before.split()[-1].strip(":,")
            hits.append(_Hit(f"{verb} {match.group()}", _STRONG, _TEXT, "", 10_000 + start))
    # An all-caps prompt says nothing by its case. (`map` with str methods: C speed, no per-char frames.)
    if hits and sum(map(str.isupper, prompt)) > 0.6 * sum(map(str.isalpha, prompt)):
        return []
    return hits


def _ranked(hits: list[_Hit]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for hit in sorted(hits, key=lambda h: (-h.weight, h.start)):
        seen.setdefault(hit.phrase, None)
    return tuple(seen)


def _score(hits: list[_Hit]) -> float:
    return sum(h.weight for h in hits)


def _quoted_list(phrases: tuple[str, ...], limit: int = 3) -> str:
    return ", ".join(f"'{p}'" for p in phrases[:limit])


def _mentions(prompt: str) -> tuple[str, ...]:
    if "@" not in prompt:
        return ()
    return tuple(dict.fromkeys("@" + m.group(1) for m in _MENTION.finditer(prompt)))


def classify(prompt: str, *, has_characters: bool = False, has_reference: bool = False) -> IntentGuess:
    """The one intent a portrait prompt needs, with a reason for users and the cues that decided it."""
    norm, quotes = _normalize(prompt)
    scan = _scan(norm)
    text_hits = scan.hits["text"] + _quote_hits(norm, quotes)
    if prompt != prompt.lower() and any(verb in norm for verb in _CAPS_VERBS):
        text_hits += _caps_hits(prompt)
    style_hits, studio_hits, photo_hits = scan.hits["style"], scan.hits["studio"], scan.hits["photo"]
    # A realism word on a render asks for the realistic look (see the module docstring).
    if any(h.flag == "realism" for h in photo_hits) and any(h.flag == "render" for h in style_hits):
        scan.dropped += [h.phrase for h in style_hits if h.flag == "render"]
        style_hits = [h for h in style_hits if h.flag != "render"]

    style_score = _score(style_hits) - (_PHOTO_DISCOUNT if photo_hits else 0.0)
    decided: tuple[str, str, tuple[str, ...]] | None = None
    if _score(text_hits) >= _FIRE:
        cues = _ranked(text_hits)
        decided = ("literal", f"literal: {_TEXT} ('{cues[0]}')", cues)
    elif style_score >= _FIRE:
        ranked_style = sorted(style_hits, key=lambda h: (-h.weight, h.start))
        cues = _ranked(style_hits)
        decided = ("stylized", f"stylized: '{cues[0]}' {ranked_style[0].why}", cues)
    elif _score(studio_hits) >= _FIRE:
        cues = _ranked(studio_hits)
        decided = ("literal", f"literal: {_STUDIO} ({_quoted_list(cues)})", cues)

    mentions = _mentions(prompt)
    if mentions or has_characters or has_reference:
        if mentions:
            names = " and ".join(mentions) if len(mentions) <= 3 else ", ".join(mentions)
            who = f"{names} {'is a known character' if len(mentions) == 1 else 'are known characters'}"
        elif has_characters:
            who = "the request carries a character"
        else:
            who = "a reference photo was given"
        won_over = f" (wins over the {decided[0]} cue '{decided[2][0]}')" if decided else ""
        return IntentGuess("identity", f"identity: {who}{won_over}", mentions)

    if decided is not None:
        return IntentGuess(*decided)

    photo_cues = _ranked(photo_hits)
    dropped = scan.dropped
    if photo_cues:
        reason = f"photoreal: a realism-first portrait ({_quoted_list(photo_cues)})"
    elif dropped:
        # Say why a style or text word did not count: "an anime fan", "no text".
        dropped_list = _quoted_list(tuple(dropped))
        reason = f"photoreal: a realism-first portrait ({dropped_list}: negated or part of the scene)"
    else:
        reason = _PHOTOREAL_DEFAULT
    return IntentGuess("photoreal", reason, photo_cues)

"""classify(): one intent per prompt, transparent reasons, the shared eval file and our own held-out set.

The held-out prompts below were written from the intent definitions *before* the rules were tuned, and
none were dropped afterwards: the accuracy test reports the ones we still get wrong instead.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.intent import INTENTS, IntentGuess, classify

# (prompt, expected intent). No flags: every `@name` is a known character.
HELD_OUT: tuple[tuple[str, str], ...] = (
    # --- identity: any character wins over everything else ---
    ("@mara as a watercolor painting", "identity"),
    ("@leo on a street in Tokyo at night, 35mm film", "identity"),
    ("portrait of @ana holding a sign that reads 'HELLO'", "identity"),
    ("@sam and @jules at a wedding, candid", "identity"),
    ("@kai in anime style", "identity"),
    ("passport photo of @ben, plain white background", "identity"),
    ("corporate headshot of @priya on a grey seamless backdrop", "identity"),
    ("a cinematic portrait of @noor, golden hour, 85mm", "identity"),
    ("@dad as a pixar character", "identity"),
    ("@tom_h wearing a name tag that says 'TOM'", "identity"),
    ("oil painting of @grandma in a garden", "identity"),
    ("@Zoe in a leather jacket, rainy street", "identity"),
    ("me and @lucas hiking in the alps", "identity"),
    ("@r2 as a knight in shining armor, 3D render", "identity"),
    ("@maya_2 smiling, window light, natural skin texture", "identity"),
    ("(@ines) at a café in Paris", "identity"),
    ("@olga, @piotr and @kasia as a family portrait in front of a fireplace", "identity"),
    ("@chef-marco in his kitchen", "identity"),
    ("ukiyo-e print of @hiro", "identity"),
    ("@amy as a superhero on a comic book cover", "identity"),
    ("pencil sketch of @dev reading a book", "identity"),
    ("magazine cover of @lena with the title 'ICON'", "identity"),
    # --- literal: readable text ---
    ("a woman holding a sign that reads 'VOTE'", "literal"),
    ("portrait of a nurse wearing a name tag, hospital hallway", "literal"),
    ("magazine cover portrait of a jazz singer with the title 'BLUE NOTE' at the top", "literal"),
    ("anime poster with the title 'NEON'", "literal"),
    ('a barista in front of a chalkboard menu with the words "Daily Roast" written on it', "literal"),
    ("basketball player in a jersey with the name 'RIVERA' and number 23 on the back", "literal"),
    ("a protester with a placard reading 'NO MORE'", "literal"),
    ("a graduate holding a diploma, caption underneath: 'Class of 2025'", "literal"),
    ("book cover portrait of an old sailor, title text 'The Last Voyage' in bold serif letters", "literal"),
    ("a street vendor under a neon sign spelling OPEN", "literal"),
    ('a man wearing a t-shirt with the text "I ♥ NY"', "literal"),
    ("a shop owner standing under a storefront sign that says 'Bakery'", "literal"),
    ("a boxer holding a championship belt engraved with the word CHAMPION", "literal"),
    ("portrait of a chef, a logo with the words 'Mama's Kitchen' embroidered on the apron", "literal"),
    ("a kid's birthday portrait with a banner that says 'HAPPY 7TH BIRTHDAY'", "literal"),
    ("movie poster of a detective in the rain, title 'MIDNIGHT' and a tagline below", "literal"),
    ("oil painting of a king holding a scroll bearing the words 'Veni Vidi Vici'", "literal"),
    ("a marathon runner wearing race bib number 42", "literal"),
    ("a teacher writing 'E = mc2' on a blackboard", "literal"),
    ("a woman wearing a t-shirt that says HELLO", "literal"),
    ("a cake with 'Happy Birthday Mia' written in icing, the baker smiling behind it", "literal"),
    ("watercolor greeting card portrait with the lettering 'Thank You' across the top", "literal"),
    ("a delivery driver with name badges on his uniform", "literal"),
    # --- literal: a tightly specified, controlled studio setup ---
    ("passport photo of a man, plain white background", "literal"),
    ("corporate headshot, light grey seamless backdrop, navy suit, white shirt, centered", "literal"),
    ("ID photo, neutral expression, facing the camera, white background", "literal"),
    ("e-commerce catalog shot of a model wearing a red hoodie, front view, plain white backdrop", "literal"),
    ("visa photo of a woman, 35x45 mm, light blue background", "literal"),
    ("conference badge photo, head and shoulders, plain grey background", "literal"),
    ("exactly three people standing in a row on a white seamless backdrop", "literal"),
    ("LinkedIn headshot, solid blue backdrop, black turtleneck, centered, head and shoulders", "literal"),
    ("product-style catalog photo of a woman wearing a beige trench coat, front and back views", "literal"),
    ("the subject must face the camera directly, arms at her sides, on a plain backdrop", "literal"),
    # --- stylized ---
    ("3D render of a knight", "stylized"),
    ("watercolor portrait on a plain white backdrop", "stylized"),
    ("anime girl with silver hair under cherry blossoms", "stylized"),
    ("oil painting of an old fisherman, thick impasto", "stylized"),
    ("charcoal sketch of a ballerina", "stylized"),
    ("pixel art portrait of a wizard", "stylized"),
    ("a portrait in the style of Klimt, gold leaf", "stylized"),
    ("Pixar-style boy with a red balloon", "stylized"),
    ("claymation figure of a grumpy grandpa", "stylized"),
    ("manga panel of a samurai, screentone shading", "stylized"),
    ("low-poly portrait of a fox-masked warrior", "stylized"),
    ("cel-shaded portrait of a racer", "stylized"),
    ("digital painting of an elf queen, concept art", "stylized"),
    ("storybook illustration of a girl and her cat", "stylized"),
    ("ukiyo-e portrait of a kabuki actor", "stylized"),
    ("stained glass window portrait of a saint", "stylized"),
    ("vector illustration of a barista, flat colors", "stylized"),
    ("gouache portrait of a farmer at dawn", "stylized"),
    ("comic book hero portrait with halftone dots", "stylized"),
    ("art nouveau portrait of a woman with flowing hair", "stylized"),
    ("ink drawing of a sailor", "stylized"),
    ("cartoon of a dog walker in the park", "stylized"),
    ("acrylic painting of a jazz trumpeter", "stylized"),
    ("a mosaic portrait of an emperor", "stylized"),
    ("a woman painted in the style of Van Gogh, swirling brushstrokes", "stylized"),
    ("cute chibi version of a firefighter", "stylized"),
    ("studio ghibli style portrait of a young shepherd", "stylized"),
    ("hand-drawn pencil portrait of a grandmother", "stylized"),
    ("CGI character portrait of an orc warlord", "stylized"),
    ("anime portrait of a pilot, no text", "stylized"),
    # --- photoreal: everything else, including style words used as subjects ---
    ("photo of a painter at work in her studio", "photoreal"),
    ("portrait of an anime fan at a convention", "photoreal"),
    ("sketchy neighborhood at night, a man under a streetlight", "photoreal"),
    ("a sign language interpreter on stage", "photoreal"),
    ("oil rig worker at dusk, weathered face", "photoreal"),
    ("editorial portrait of a cellist, window light, 85mm f/1.8", "photoreal"),
    ("candid street portrait of an old man in Havana, Kodak Portra 400", "photoreal"),
    ("golden hour portrait of a surfer on the beach", "photoreal"),
    ("environmental portrait of a blacksmith in his forge", "photoreal"),
    ("documentary photo of a farmer in a rice field", "photoreal"),
    ("close-up portrait of a woman with freckles, overcast daylight, no text, no watermark", "photoreal"),
    ("a photo of a tattoo artist, not an illustration", "photoreal"),
    ("a comic book store owner behind the counter", "photoreal"),
    ("portrait of a cartoonist at her drawing desk", "photoreal"),
    ("a potter at the wheel, hands covered in clay", "photoreal"),
    ("a street artist spray-painting a mural, photographed from behind", "photoreal"),
    ("portrait of a signalman at a railway crossing", "photoreal"),
    ("a young politician, the poster boy of his party, shaking hands at a rally", "photoreal"),
    ("a museum visitor looking at a watercolor on the wall", "photoreal"),
    ("mother and daughter laughing in the kitchen, lifestyle photo", "photoreal"),
    ("a fisherman mending nets, black and white, grainy film", "photoreal"),
    ("headshot of an actor, moody lighting, dark background", "photoreal"),
    ("photo, not a painting: an old woman knitting by the fire", "photoreal"),
    ("a character actor in costume on a film set", "photoreal"),
    ("portrait of a man reading a newspaper on a bench", "photoreal"),
    ("photo of a cosplayer dressed as an anime character at a convention", "photoreal"),
    ("a boxer after a title fight, sweat and bruises", "photoreal"),
    ("a man in a charcoal suit, studio lighting", "photoreal"),
    ("portrait of a chef, Rembrandt lighting, 85mm", "photoreal"),
    ("a stand-up comic on stage under a spotlight", "photoreal"),
    ("a man reading a manga on the subway", "photoreal"),
    ("portrait of a watercolor artist in her studio", "photoreal"),
    ("a woman in a pencil skirt walking to work", "photoreal"),
    ("a skateboarder in front of a graffiti wall, no text", "photoreal"),
    ("portrait in the style of Annie Leibovitz, dramatic light", "photoreal"),
    ("a kid wearing 3D glasses at the cinema", "photoreal"),
    ("a woman with acrylic nails sipping coffee", "photoreal"),
)

# Written *while* tuning (after the held-out set above), to probe gaps the held-out set did not cover;
# each one that failed led to a general rule, not a special case. Pinned here as regressions. Two of the
# last, untuned batch are still wrong and left out on purpose (a bare singular "comic" is not a cue, since
# "a stand-up comic" is a person; "ligne claire" is not in the vocabulary):
#   "a sheriff in a western town, spaghetti western comic" -> photoreal (want stylized)
#   "an explorer, Tintin ligne claire style" -> photoreal (want stylized)
TUNING_PROBES: tuple[tuple[str, str], ...] = (
    ("a woman in a red coat walking in the snow", "photoreal"),
    ("hyperrealistic portrait of an old man, 8k, ultra detailed", "photoreal"),
    ("cinematic still of a detective in a trench coat", "photoreal"),
    ("a ballerina backstage, film photography, grain", "photoreal"),
    ("portrait of a painter in a paint-splattered apron", "photoreal"),
    ("an illustrator sketching at a cafe", "photoreal"),
    ("a kid drawing with crayons at the kitchen table", "photoreal"),
    ("a woman painting her nails", "photoreal"),
    ("a man painting a fence on a summer day", "photoreal"),
    ("a cowboy at sunset, Rembrandt lighting", "photoreal"),
    ("a girl reading comics on the porch", "photoreal"),
    ("a tattooed man with a koi tattoo on his arm", "photoreal"),
    ("portrait of a graphic designer at her desk", "photoreal"),
    ("a woman in front of a mural in Mexico City", "photoreal"),
    ("a boy with a clay pot", "photoreal"),
    ("a model on a runway, flash photography", "photoreal"),
    ("portrait of a man holding his newborn, black and white", "photoreal"),
    ("a newsstand vendor surrounded by magazines", "photoreal"),
    ("a rapper on stage, smoke, colored lights", "photoreal"),
    ("a monk in a temple, soft morning light", "photoreal"),
    ("a woman with a watercolor-blue scarf", "photoreal"),
    ("a soldier in ink-black night, rain", "photoreal"),
    ("a figure skater mid-spin", "photoreal"),
    ("a fashion designer sketching a dress", "photoreal"),
    ("a cartoonist in a cluttered studio, natural light", "photoreal"),
    ("a man in a suit giving a signed contract", "photoreal"),
    ("designer in a studio with posters on the wall", "photoreal"),
    ("a signpost in the desert and a hitchhiker", "photoreal"),
    ("a painting conservator restoring an old canvas", "photoreal"),
    ("portrait of a renaissance fair performer", "photoreal"),
    ("a woman on a plain street in a small town", "photoreal"),
    ("low angle portrait of a basketball player dunking", "photoreal"),
    ("a woman with pastel hair in a neon-lit arcade", "photoreal"),
    ("a veteran with his medals, dignified, 50mm", "photoreal"),
    ("a woman wearing a cartoon-print sweater, candid", "photoreal"),
    ("portrait of a queen, renaissance oil painting", "stylized"),
    ("a witch, dark fantasy illustration", "stylized"),
    ("a samurai, sumi-e ink", "stylized"),
    ("portrait of a cat as a Victorian gentleman, oil on canvas", "stylized"),
    ("a cyberpunk hacker, synthwave poster art", "stylized"),
    ("a girl with a red umbrella, impressionist", "stylized"),
    ("a robot barista, isometric 3d", "stylized"),
    ("a superhero, Marvel comics style", "stylized"),
    ("a boy and his dog, Norman Rockwell", "stylized"),
    ("a fairy, Studio Ghibli", "stylized"),
    ("knight portrait, digital art, trending on artstation", "stylized"),
    ("portrait drawn in colored pencils", "stylized"),
    ("a pirate, claymation style", "stylized"),
    ("a woman, art deco poster", "stylized"),
    ("a viking, drawn in the style of Frank Frazetta", "stylized"),
    ("Lego minifigure of an astronaut", "stylized"),
    ("a ninja, anime key visual", "stylized"),
    ("an old man, woodcut print", "stylized"),
    ("portrait of a scientist as a Roman marble statue", "stylized"),
    ("a dancer rendered as a line drawing", "stylized"),
    ("a girl with a pearl earring, painted by Vermeer", "stylized"),
    ("toddler as a Pixar character", "stylized"),
    ("soldier, watercolour and ink", "stylized"),
    ("a farmer, naive folk art painting", "stylized"),
    ("a chef, caricature with a big head", "stylized"),
    ("a queen in the style of Alphonse Mucha", "stylized"),
    ("a punk rocker, pop art, Warhol", "stylized"),
    ("portrait of a gnome, storybook style", "stylized"),
    ("a detective, noir graphic novel panel", "stylized"),
    ("an elf, fantasy oil painting, dramatic", "stylized"),
    ("a woman holding a cardboard sign, protest", "literal"),
    ("a baseball player with number 7 on his jersey", "literal"),
    ("a chef's apron with the restaurant name 'LUCA' embroidered", "literal"),
    ("a birthday girl with a cake that says Happy 30th", "literal"),
    ("a street musician with a sign saying tips welcome", "literal"),
    ("a graduation portrait, diploma with her name 'ANNA KIM' visible", "literal"),
    ("headshot for a visa application, white background, no glasses", "literal"),
    ("full body catalog photo of a man in chinos, white backdrop, front view", "literal"),
    ("a podcast host with a neon sign reading ON AIR behind him", "literal"),
    ("a comic panel of a hero shouting, speech bubble says 'BOOM'", "literal"),
    ("anime poster, title text 'STARFALL' at the top", "literal"),
    ("a woman at a desk, nameplate reading 'Dr. Patel'", "literal"),
    ("a kid holding a handwritten sign 'lemonade 50c'", "literal"),
    ("wedding portrait with 'Just Married' written on the car", "literal"),
    ("the subject is centered, head and shoulders, on a light grey backdrop", "literal"),
    ("a boxer with his name on the waistband of his shorts", "literal"),
    ("an athlete in a tank top with the word 'RUN' across the chest", "literal"),
    ("employee ID badge photo, blue background", "literal"),
    ("a man on a plain white background, exactly centered", "literal"),
    ("a book cover with the title The Quiet Sea and a lighthouse keeper", "literal"),
    ("jersey reading MESSI 10", "literal"),
    ("a scientist in a lab coat with an embroidered name", "literal"),
    ("magazine cover portrait of a tennis star, Vogue", "literal"),
    ("a cafe owner under a sign that says OPEN", "literal"),
    ("a runner crossing the finish line, banner reading FINISH", "literal"),
    ("a painted portrait of a general in dress uniform", "stylized"),
    ("a painting of a woman reading by candlelight", "stylized"),
    ("portrait, anime", "stylized"),
    ("anime", "stylized"),
    ("a man with a drawn sword on a battlefield, cinematic", "photoreal"),
    ("a woman in charcoal grey knitwear, soft light", "photoreal"),
    ("a man with ink-stained fingers at a printing press", "photoreal"),
    ("a calligrapher at work, hands and brush, shallow focus", "photoreal"),
    ("an old printmaker in his workshop", "photoreal"),
    ("a sign painter lettering a shop window, candid", "photoreal"),
    ("a woman laughing, no makeup, no filters, no retouching", "photoreal"),
    ("a man reading a book titled 'Dune' on a train", "literal"),
    ("a samurai with kanji written on his back banner", "literal"),
    ("watercolor portrait of a nurse wearing a name tag", "literal"),
    ("pencil sketch of a man, centered, head and shoulders, white background", "stylized"),
    ("passport photo in anime style", "stylized"),
    ("manga cover with the title 'RONIN' and the author's name", "literal"),
    ("a dramatic portrait, black background, rim light", "photoreal"),
    ("a child in a Spider-Man costume at a birthday party", "photoreal"),
    ("a woman dressed as a Disney princess at a theme park", "photoreal"),
    ("a boy wearing an anime t-shirt at school", "photoreal"),
    ("a drag queen in full makeup, backstage mirror", "photoreal"),
    ("a nurse in scrubs, hospital corridor, documentary", "photoreal"),
    ("a gamer streaming at night, RGB lights", "photoreal"),
    ("a woman holding a polaroid camera", "photoreal"),
    ("a comic book artist drawing at her desk", "photoreal"),
    ("a museum guard next to a Rembrandt", "photoreal"),
    ("a girl holding a Picasso print in a gallery", "photoreal"),
    ("an art student painting en plein air, photographed", "photoreal"),
    ("an old sailor with a ship tattoo, 35mm", "photoreal"),
    ("a barber cutting hair, mirror reflections", "photoreal"),
    ("a farmer's market vendor with handwritten price tags", "literal"),
    ("two kids holding a 'Welcome Home Dad' banner at the airport", "literal"),
    ("a portrait with a quote at the bottom: 'Be kind'", "literal"),
    ("a bride, veil, soft backlight, no text, no logo, no watermark, no signature", "photoreal"),
    ("an astronaut, photorealistic render, Unreal Engine 5", "photoreal"),
    ("an astronaut, Unreal Engine 5, octane render", "stylized"),
    ("a hyper-detailed CGI portrait of a dragon rider", "stylized"),
    ("cute 3d character of a baker, blender", "stylized"),
    ("a vintage travel poster of a hiker with the word 'ALPS'", "literal"),
    ("a retro propaganda poster of a factory worker", "stylized"),
    ("portrait in the style of a Renaissance master", "stylized"),
    ("portrait in the style of a 90s music video", "photoreal"),
    ("portrait in the style of Wes Anderson, pastel palette", "photoreal"),
    ("a knight, in the style of Dark Souls concept art", "stylized"),
    ("portrait of a woman, Klimt-inspired gold patterns", "stylized"),
    ("a jazz singer, smoky club, Ektar 100", "photoreal"),
    ("close-up of an eye, macro, detailed iris", "photoreal"),
    ("a ceramicist throwing clay on a wheel", "photoreal"),
    ("a Lego enthusiast building a castle", "photoreal"),
    ("an animation studio worker at her desk", "photoreal"),
    ("kids watching cartoons on the sofa", "photoreal"),
    ("a comic-con attendee in costume", "photoreal"),
    ("a woman in a kimono, ukiyo-e inspired composition", "stylized"),
    ("elderly woman, 8k, masterpiece, best quality", "photoreal"),
    ("ID card photo of a student, blue backdrop", "literal"),
    ("mugshot of a 1920s gangster with a placard", "literal"),
    ("a lookbook shot of a model in linen, white seamless", "literal"),
    ("exactly two apples on a table next to a chef", "literal"),
    ("an e-commerce photo of a knit sweater on a model, ghost mannequin style", "literal"),
    ("the model must wear a black turtleneck", "literal"),
    ("a lighthouse keeper at dawn, weathered hands, Fuji Superia", "photoreal"),
    ("teen skateboarder mid-ollie, fisheye, 90s VHS vibe", "photoreal"),
    ("a grandmother teaching her grandson to bake bread", "photoreal"),
    ("a beekeeper in full suit among hives", "photoreal"),
    ("a jazz pianist in a smoky bar, low key lighting", "photoreal"),
    ("portrait of a tattoo artist with sleeve tattoos, neon shop light", "photoreal"),
    ("a chess player deep in thought, tournament hall", "photoreal"),
    ("a mountaineer with frost on her eyebrows, summit", "photoreal"),
    ("a model in a sculptural white gown, high fashion", "photoreal"),
    ("a girl holding a sparkler on new year's eve, motion blur", "photoreal"),
    ("moody portrait of a violinist, chiaroscuro", "photoreal"),
    ("a newborn sleeping in a knitted hat", "photoreal"),
    ("a baby in a pumpkin costume", "photoreal"),
    ("a man with a sketchbook on a park bench", "photoreal"),
    ("gothic portrait of a vampire countess, gouache and ink", "stylized"),
    ("a mermaid, art nouveau poster style", "stylized"),
    ("portrait of a robot, risograph print, two colors", "stylized"),
    ("an astronaut cat, kawaii sticker illustration", "stylized"),
    ("a jester, tarot card art", "stylized"),
    ("a gardener, children's picture book style, soft pastels", "stylized"),
    ("a barbarian, 80s fantasy paperback cover painting", "stylized"),
    ("a girl in a yellow raincoat, flat design avatar", "stylized"),
    ("portrait of an android, octane render, volumetric light", "stylized"),
    ("a wizard in a low-poly game style", "stylized"),
    ("a shopkeeper with a price board reading '3 for $5'", "literal"),
    ("a student holding a whiteboard that says 'I passed!'", "literal"),
    ("a nurse with the hospital name printed on her scrubs", "literal"),
    ("a firefighter with 'ENGINE 12' on his helmet", "literal"),
    ("a cover shot for GQ with the headline 'THE NEW CLASSIC'", "literal"),
    ("a coach holding a clipboard with the play written on it", "literal"),
    ("product photo of a model in a plain black tee, grey seamless, front and back", "literal"),
    ("a head-and-shoulders photo for a work badge, neutral background", "literal"),
    ("school portrait, blue mottled backdrop, centered, smiling", "literal"),
    ("@jon as a claymation figure", "identity"),
    ("@ava holding a sign that says 'HIRED'", "identity"),
    ("a portrait of @li in the snow, 85mm", "identity"),
    ("me as a viking", "photoreal"),
    ("an old fisherman", "photoreal"),
)

# Flag-driven identity: no mention in the text, but the request carries characters or a reference.
FLAGGED: tuple[tuple[str, dict[str, bool]], ...] = (
    ("a portrait of my friend at the beach", {"has_characters": True}),
    ("make her look like a 1920s film star", {"has_reference": True}),
    ("watercolor portrait, soft pastel palette", {"has_reference": True}),
    ("magazine cover with the title 'VOGUE'", {"has_characters": True}),
)


def test_held_out_set_is_big_and_balanced() -> None:
    counts = {intent: sum(1 for _, want in HELD_OUT if want == intent) for intent in INTENTS}
    counts["identity"] += len(FLAGGED)
    assert len(HELD_OUT) + len(FLAGGED) >= 80
    assert all(n >= 20 for n in counts.values()), counts


def test_held_out_accuracy() -> None:
    misses = [(p, want, classify(p).intent) for p, want in HELD_OUT if classify(p).intent != want]
    misses += [
        (p, "identity", classify(p, **kw).intent)
        for p, kw in FLAGGED
        if classify(p, **kw).intent != "identity"
    ]
    total = len(HELD_OUT) + len(FLAGGED)
    accuracy = 1 - len(misses) / total
    report = "\n".join(f"  want {want:9} got {got:9} {p!r}" for p, want, got in misses)
    print(f"held-out accuracy {accuracy:.1%} ({total - len(misses)}/{total})\n{report}")
    assert accuracy >= 0.90, f"held-out accuracy {accuracy:.1%}; misses:\n{report}"


def test_eval_file_accuracy(routing_eval_cases: list[tuple[str, str]]) -> None:
    cases = routing_eval_cases
    assert cases, "the routing evaluation set has no cases"
    assert {want for _, want in cases} <= set(INTENTS)
    misses = [(p, want, classify(p).intent) for p, want in cases if classify(p).intent != want]
    accuracy = 1 - len(misses) / len(cases)
    report = "\n".join(f"  want {want:9} got {got:9} {p!r}" for p, want, got in misses)
    print(f"eval accuracy {accuracy:.1%} ({len(cases) - len(misses)}/{len(cases)})\n{report}")
    assert accuracy >= 0.95, f"eval accuracy {accuracy:.1%}; misses:\n{report}"


# --- the cases the routing issue names, pinned one by one ---


@pytest.mark.parametrize(
    ("prompt", "want"),
    [
        ("photo of a painter at work", "photoreal"),
        ("portrait of an anime fan at a convention", "photoreal"),
        ("sketchy neighborhood at night", "photoreal"),
        ("a sign language interpreter", "photoreal"),
        ("oil rig worker", "photoreal"),
        ("a woman holding a sign that reads 'VOTE'", "literal"),
        ("3D render of a knight", "stylized"),
        ("passport photo of a man, plain white background", "literal"),
        ("@mara as a watercolor painting", "identity"),
        ("anime poster with the title 'NEON'", "literal"),
        ("watercolor portrait on a plain white backdrop", "stylized"),
    ],
)
def test_named_cases(prompt: str, want: str) -> None:
    assert classify(prompt).intent == want


# --- behaviour ---


def test_identity_from_mentions_and_flags() -> None:
    guess = classify("@mara as a watercolor painting")
    assert guess.intent == "identity"
    assert guess.matched == ("@mara",)
    assert "@mara" in guess.reason
    assert "watercolor" in guess.reason  # names what identity won over
    assert classify("a woman at the beach", has_characters=True).intent == "identity"
    assert classify("a woman at the beach", has_reference=True).intent == "identity"
    assert classify("@a and @b and @a").matched == ("@a", "@b")


def test_email_addresses_and_bare_at_signs_are_not_mentions() -> None:
    assert classify("portrait of a barista, shot for hello@cafe.com").intent == "photoreal"
    assert classify("a man @ the beach at sunset").intent == "photoreal"


def test_reasons_follow_the_house_style() -> None:
    stylized = classify("watercolor portrait of a fisherman")
    assert stylized.reason.startswith("stylized: 'watercolor'")
    assert stylized.matched[0] == "watercolor"
    literal = classify("portrait of a nurse wearing a name tag")
    assert literal.reason == "literal: the image must show readable text ('name tag')"
    assert literal.matched == ("name tag",)
    plain = classify("a woman on a balcony")
    assert plain.reason == "photoreal: a realism-first portrait (no text, style or character asked for)"
    assert plain.matched == ()
    lens = classify("a woman on a balcony, 85mm, golden hour")
    assert lens.intent == "photoreal"
    assert set(lens.matched) == {"85mm", "golden hour"}
    quoted = classify("a woman holding a sign that reads 'VOTE'")
    assert quoted.reason == """literal: the image must show readable text ('reads "VOTE"')"""
    assert classify("a neon sign spelling OPEN").intent == "literal"
    photographer = classify("portrait in the style of Annie Leibovitz")
    assert photographer.intent == "photoreal"
    assert photographer.matched == ("in the style of annie leibovitz",)
    subject = classify("portrait of an anime fan at a convention")
    assert subject.reason == "photoreal: a realism-first portrait ('anime': negated or part of the scene)"
    studio = classify("passport photo of a man, plain white background")
    assert studio.reason.startswith("literal: a tightly specified studio setup")
    assert "passport photo" in studio.matched


@pytest.mark.parametrize(
    "prompt",
    [
        "close-up of a woman, no text",
        "portrait of a man without text or lettering",
        "a street portrait, no watermark, no logo",
        "a man in a plain t-shirt with no words on it",
    ],
)
def test_negated_text_is_not_literal(prompt: str) -> None:
    assert classify(prompt).intent == "photoreal"


@pytest.mark.parametrize(
    "prompt",
    [
        "an old woman knitting, not a painting",
        "photo, not illustration, of a boy with a kite",
        "a portrait of a dancer, no anime, no cartoon",
        "a real photograph of a sailor without any painterly effects",
    ],
)
def test_negated_style_is_not_stylized(prompt: str) -> None:
    assert classify(prompt).intent == "photoreal"


def test_hyphens_plurals_and_case() -> None:
    assert classify("NURSE WITH A NAME-TAG").intent == "literal"
    assert classify("two nurses with name tags").intent == "literal"
    assert classify("protesters holding signs").intent == "literal"
    assert classify("Watercolour Portrait Of A Sailor").intent == "stylized"
    assert classify("low poly fox").intent == "stylized"


def test_photorealistic_3d_is_photoreal_but_a_photorealistic_painting_is_not() -> None:
    # A realism qualifier on a render asks for the realistic look: a photoreal model serves it best.
    assert classify("photorealistic 3D render of a knight").intent == "photoreal"
    assert classify("3D render of a knight, hyperrealistic skin").intent == "photoreal"
    # ...but a painting stays a painting, however realistic.
    assert classify("photorealistic oil painting of a knight").intent == "stylized"


def test_quoted_text_needs_a_text_word() -> None:
    # Scare quotes are not text to render.
    assert classify('portrait of a "femme fatale" in a red coat').intent == "photoreal"
    assert classify("a cafe sign with \u201cOPEN\u201d on it").intent == "literal"


def test_every_answer_is_in_the_vocabulary() -> None:
    for prompt in ("", "   ", "@", "''", "a", "🙂" * 50, "no no no not without"):
        guess = classify(prompt)
        assert isinstance(guess, IntentGuess)
        assert guess.intent in INTENTS
        assert guess.reason.startswith(guess.intent + ":")


def test_classification_is_fast() -> None:
    prompt = (
        "editorial portrait of a woman in a charcoal coat on a rainy street in Lisbon, soft window light "
        "from a cafe, 85mm f/1.8, Kodak Portra 400, natural skin texture, candid expression, shallow depth "
        "of field, muted colors, a tram passing behind her, reflections on wet cobblestones, evening"
    )
    assert 250 <= len(prompt) <= 350
    classify(prompt)  # warm up
    runs = 2000
    start = time.perf_counter()
    for _ in range(runs):
        classify(prompt)
    per_call = (time.perf_counter() - start) / runs
    print(f"classify: {per_call * 1e6:.1f} µs per call")
    assert per_call < 1e-3  # generous for slow CI; typically tens of µs


@pytest.mark.parametrize(("prompt", "want"), TUNING_PROBES)
def test_tuning_probes(prompt: str, want: str) -> None:
    guess = classify(prompt)
    assert guess.intent == want, guess.reason


_VOCAB = tuple(
    " ".join(
        (
            "portrait of a woman man painter anime fan watercolor oil painting sketch drawing 3D render",
            "photorealistic not no without sign that reads says title name tag passport photo plain white",
            "background seamless backdrop centered head and shoulders exactly must in the style of Klimt",
            "Leibovitz 85mm golden hour @mara , . : ( ) 'VOTE' \"OPEN\" “HI” OPEN number 7 #7 holding a",
            "placard comic book store looking at charcoal suit pencil skirt lettering the words caption",
        )
    ).split(" ")
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_VOCAB), max_size=40).map(" ".join) | st.text(max_size=400))
def test_any_prompt_gets_one_valid_answer(prompt: str) -> None:
    guess = classify(prompt)
    assert guess.intent in INTENTS
    assert guess.reason.startswith(guess.intent + ":")
    assert all(isinstance(cue, str) and cue and cue == cue.strip() for cue in guess.matched)
    assert classify(prompt) == guess  # pure: same prompt, same answer


def test_router_modules_import_only_the_standard_library() -> None:
    # The router stays pure and light: no bot/characters/jobs, no torch, nothing outside the stdlib.
    allowed = {"__future__", "dataclasses", "functools", "re", "typing"}
    for module in ("intent.py", "craft.py"):
        tree = ast.parse((Path(__file__).resolve().parents[2] / "router" / module).read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        imported |= {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert imported <= allowed, (module, imported - allowed)

"""Everyday questions with helpful answers, written for rlhfx's quickstart preference set.

Each topic has a noun phrase (`subject`, used by the unhelpful-answer templates so that a bad
answer mentions the topic too), two or three ways to ask, a one-sentence answer and a longer
one. The text is our own; it aims to be correct general knowledge, not expert advice.
"""

from __future__ import annotations

from typing import NamedTuple


class Topic(NamedTuple):
    subject: str
    questions: tuple[str, ...]
    short: str
    long: str


def _t(subject: str, questions: list[str], short: str, long: str) -> Topic:
    return Topic(subject, tuple(questions), short, long)


TOPICS: list[Topic] = [
    # ------------------------------------------------------------------ kitchen
    _t("boiling eggs",
       ["How do I boil an egg?", "What's the easiest way to hard-boil eggs?",
        "How long should I boil an egg for a runny yolk?"],
       "Lower the egg into boiling water for about 6 minutes for a runny yolk or 9 to 10 for "
       "a firm one, then cool it in cold water.",
       "Bring a pot of water to a gentle boil and lower the egg in with a spoon. Six minutes "
       "gives a soft, runny yolk; nine to ten minutes gives a firm one. Move the egg straight "
       "into cold water for a few minutes, which stops the cooking and makes the shell easier "
       "to peel."),
    _t("cooking rice",
       ["How do I cook rice on the stove?", "My rice always turns out mushy. What am I doing "
        "wrong?"],
       "Rinse the rice, simmer it covered in about 1.5 parts water to 1 part rice for 15 "
       "minutes, then let it rest off the heat for 5 minutes.",
       "Rinse the rice until the water runs mostly clear; that removes loose starch that makes "
       "it sticky. Use roughly one and a half cups of water per cup of white rice, bring it to "
       "a boil, then cover and simmer on low for about 15 minutes without lifting the lid. Let "
       "it sit covered off the heat for five minutes and fluff it with a fork. Mushy rice "
       "usually means too much water or too much stirring."),
    _t("keeping bread fresh",
       ["How can I keep bread from going stale so fast?", "What's the best way to store a loaf "
        "of bread?"],
       "Keep bread in a paper or cloth bag at room temperature for a couple of days, and freeze "
       "slices you won't eat soon.",
       "Bread goes stale fastest in the fridge, so keep it at room temperature in a bread box, "
       "paper bag or cloth bag for two or three days. Plastic keeps it soft but can make the "
       "crust chewy and invite mold. If you won't finish the loaf, slice it and freeze it; "
       "slices toast well straight from the freezer."),
    _t("chopping onions",
       ["How do I chop onions without crying?", "Why do onions make my eyes water, and how do "
        "I stop it?"],
       "Use a very sharp knife and chill the onion for 15 minutes first; both reduce the "
       "irritating gas the onion releases.",
       "Cutting an onion breaks its cells and releases a compound that turns into an "
       "irritating gas when it reaches your eyes. A sharp knife crushes fewer cells, and a "
       "chilled onion releases the gas more slowly. Working near a running fan or an open "
       "window also helps carry it away from your face."),
    _t("salad dressing",
       ["How do I make a simple salad dressing?", "What's a basic vinaigrette recipe?"],
       "Whisk three parts olive oil with one part vinegar or lemon juice, plus a pinch of salt "
       "and a little mustard.",
       "A classic vinaigrette is three parts oil to one part acid. Put a spoonful of vinegar "
       "or lemon juice in a jar with a pinch of salt, some pepper and half a teaspoon of "
       "mustard, add three spoonfuls of olive oil, close the lid and shake. The mustard helps "
       "the oil and vinegar stay mixed. Taste it on a leaf and adjust the salt or acid."),
    _t("storing fresh herbs",
       ["How do I keep fresh herbs from wilting?", "What's the best way to store basil and "
        "parsley?"],
       "Treat soft herbs like flowers: trim the stems and stand them in a glass of water, but "
       "keep basil out of the fridge.",
       "Soft herbs such as parsley and cilantro last longest standing in a glass of water in "
       "the fridge with a loose bag over the top. Basil is the exception: it blackens in the "
       "cold, so keep its glass on the counter. Woody herbs like rosemary and thyme keep well "
       "wrapped in a slightly damp paper towel in the fridge."),
    _t("fixing salty soup",
       ["I put too much salt in my soup. Can I fix it?", "How do you rescue an over-salted "
        "stew?"],
       "Add more unsalted liquid or more of the other ingredients to dilute it; a squeeze of "
       "lemon can also balance the taste.",
       "The reliable fix is dilution: add unsalted stock or water, or cook more vegetables, "
       "beans or rice into the pot so the same salt is spread over more food. A little acid, "
       "such as lemon juice or vinegar, makes saltiness less noticeable. The old trick of "
       "adding a raw potato removes very little salt, so don't rely on it."),
    _t("cooking chicken safely",
       ["How can I tell when chicken is cooked through?", "Is it safe to eat chicken that's a "
        "little pink?"],
       "Use a meat thermometer: chicken is safe when the thickest part reaches 74 °C (165 °F), "
       "whatever its color.",
       "Color is not a reliable sign, so the best check is a meat thermometer in the thickest "
       "part of the meat, away from the bone. Chicken is safe at 74 °C (165 °F). Without a "
       "thermometer, cut into the thickest piece: the juices should run clear and the meat "
       "should not be translucent. When in doubt, cook it a few minutes longer."),
    _t("brewing tea",
       ["How do I make a good cup of tea?", "How long should I steep black tea?"],
       "Pour freshly boiled water over black tea and steep it for 3 to 5 minutes; green tea "
       "prefers cooler water and 2 to 3 minutes.",
       "For black tea, use water just off the boil and steep one bag or a teaspoon of leaves "
       "per cup for three to five minutes, longer if you take milk. Green tea turns bitter in "
       "boiling water, so let the water cool for a few minutes and steep it for two to three "
       "minutes. Remove the leaves when the time is up so the tea doesn't stew."),
    _t("cold brew coffee",
       ["How do I make cold brew coffee at home?", "What's the ratio for cold brew?"],
       "Stir one part coarse ground coffee into about eight parts cold water, leave it in the "
       "fridge for 12 to 18 hours, then strain.",
       "Use coarsely ground coffee and cold water, about one part coffee to eight parts water "
       "for a drink you can serve straight, or one to four for a concentrate you dilute later. "
       "Stir, cover and leave it in the fridge for 12 to 18 hours. Strain it through a fine "
       "sieve lined with a paper filter. It keeps in the fridge for about a week."),
    _t("ripening avocados",
       ["How can I make an avocado ripen faster?", "How do I know if an avocado is ripe?"],
       "Put the avocado in a paper bag with a banana or apple; it is ripe when it yields "
       "slightly to gentle pressure.",
       "Avocados ripen after picking, driven by a gas called ethylene. Closing one in a paper "
       "bag with a banana or an apple, which also release ethylene, speeds things up to a day "
       "or two. Press gently near the stem: a ripe avocado gives a little without feeling "
       "mushy. Once ripe, the fridge slows it down for a few more days."),
    _t("storing leftovers",
       ["How long can I leave cooked food out before putting it in the fridge?",
        "What's the safe way to store leftovers?"],
       "Refrigerate cooked food within two hours, in shallow containers, and eat it within "
       "three to four days.",
       "Bacteria grow quickly at room temperature, so get cooked food into the fridge within "
       "two hours, or one hour on a very hot day. Shallow containers cool faster than one deep "
       "pot. Most leftovers are good for three to four days in the fridge; freeze anything "
       "you won't eat by then, and reheat until it is steaming hot all the way through."),
    # ------------------------------------------------------------------ household
    _t("red wine stains",
       ["How do I get a red wine stain out of a carpet?", "I spilled red wine on my shirt. "
        "What should I do?"],
       "Blot, don't rub, then rinse with cold water and dab on a mix of dish soap and a little "
       "white vinegar before washing.",
       "Act quickly and blot the spill with a clean cloth; rubbing pushes the wine deeper. "
       "Rinse the spot with cold water, since hot water can set the stain. Dab on a mix of a "
       "spoonful of dish soap, a spoonful of white vinegar and two cups of water, blot again, "
       "and repeat until no more color lifts. For a shirt, wash it in cold water afterwards "
       "and check the stain is gone before using the dryer."),
    _t("unclogging a sink",
       ["My bathroom sink drains really slowly. How can I fix it?", "How do I unclog a drain "
        "without calling a plumber?"],
       "Pull out the hair and gunk from the drain with a bent wire or a drain snake, then "
       "flush it with hot water.",
       "Slow bathroom sinks are usually clogged by hair and soap near the top of the drain. "
       "Remove the stopper, then fish out the clog with a cheap plastic drain snake or a bent "
       "wire hanger. A plunger can help if that doesn't clear it; cover the overflow hole with "
       "a wet cloth first so it can build pressure. Finish with a kettle of hot water. Avoid "
       "mixing different chemical drain cleaners, which can react dangerously."),
    _t("fruit flies",
       ["How do I get rid of fruit flies in my kitchen?", "There are tiny flies around my fruit "
        "bowl. What can I do?"],
       "Remove overripe fruit, take out the trash, and set a trap of cider vinegar with a drop "
       "of dish soap.",
       "Fruit flies breed on ripe fruit and damp scraps, so start by removing overripe fruit, "
       "emptying the compost and trash, and rinsing recycling. Then pour a little apple cider "
       "vinegar into a jar, add a drop of dish soap so the surface tension breaks, and leave "
       "it near where they gather. Flies that land in it sink. Keep fruit in the fridge for a "
       "week or so until they are gone."),
    _t("cleaning a microwave",
       ["What's the easiest way to clean a dirty microwave?", "How do I get dried food off the "
        "inside of my microwave?"],
       "Microwave a bowl of water with lemon juice or vinegar for a few minutes, let it steam, "
       "then wipe the softened mess away.",
       "Fill a microwave-safe bowl with a cup of water and a few spoonfuls of vinegar or "
       "lemon juice and heat it for three to five minutes until the window steams up. Leave "
       "the door closed for a few more minutes so the steam loosens the dried food. Then "
       "carefully remove the hot bowl and wipe the inside with a sponge; the turntable can go "
       "in the sink."),
    _t("descaling a kettle",
       ["How do I remove limescale from my kettle?", "There's white crust inside my kettle. "
        "How do I clean it?"],
       "Boil a mix of half water and half white vinegar in the kettle, leave it for an hour, "
       "then rinse and boil fresh water twice.",
       "The white crust is limescale, minerals left behind by hard water, and mild acid "
       "dissolves it. Fill the kettle halfway with equal parts water and white vinegar, or "
       "water with a few spoonfuls of citric acid, bring it to the boil and let it stand for "
       "an hour. Pour it out, scrub any remaining spots, rinse, and boil fresh water once or "
       "twice to get rid of the taste."),
    _t("lowering heating bills",
       ["How can I save money on heating this winter?", "My heating bill is huge. Any tips?"],
       "Turn the thermostat down a degree or two, seal drafts around doors and windows, and "
       "heat only the rooms you use.",
       "Each degree you lower the thermostat cuts heating costs noticeably, and a programmable "
       "thermostat can lower it further at night or while you're out. Seal drafts with cheap "
       "weatherstripping and door snakes, close curtains at dusk, and keep radiators clear of "
       "furniture. Closing doors to rooms you don't use means you heat less space."),
    _t("squeaky door hinges",
       ["How do I stop a door from squeaking?", "My bedroom door creaks every time I open it. "
        "How do I fix that?"],
       "Lift out the hinge pin, wipe it clean, coat it with a little petroleum jelly or light "
       "oil, and tap it back in.",
       "The squeak comes from metal rubbing inside the hinge. Close the door, tap the hinge "
       "pin up and out with a nail and a hammer, and wipe off the old grime. Coat the pin with "
       "petroleum jelly, a silicone spray or a few drops of light machine oil, push it back in "
       "and swing the door a few times to spread it. Do one hinge at a time so the door stays "
       "supported."),
    _t("hanging pictures",
       ["How do I hang a picture so it's straight?", "What's the trick to hanging a frame at "
        "the right height?"],
       "Put the center of the picture about 145 to 150 cm from the floor and check it with a "
       "level before marking the nail hole.",
       "A common rule is to put the center of the picture at eye level, about 145 to 150 cm "
       "from the floor. Measure the distance from the top of the frame to the taut hanging "
       "wire, and mark the nail position that far below where you want the top. Use a level, "
       "or a level app on your phone, and for heavy frames use two hooks spaced apart so it "
       "stays straight."),
    _t("washing wool sweaters",
       ["How do I wash a wool sweater without shrinking it?", "Can I put a wool jumper in the "
        "washing machine?"],
       "Hand-wash wool in cool water with a wool detergent, press the water out without "
       "wringing, and dry it flat.",
       "Heat and rubbing make wool fibers felt and shrink. Wash the sweater by hand in cool "
       "water with a gentle wool detergent, or on your machine's wool cycle if it has one. "
       "Don't wring it; roll it in a towel to press the water out, then lay it flat on a dry "
       "towel, reshape it, and keep it away from radiators and direct sun."),
    _t("organizing a closet",
       ["How can I organize a small closet?", "My wardrobe is overflowing. Where do I start?"],
       "Take everything out, donate what you haven't worn in a year, and use matching hangers "
       "and shelf dividers for the rest.",
       "Start by emptying the closet completely so you can see what you own. Keep what you "
       "wore in the last year, and donate or sell the rest. Slim matching hangers save a "
       "surprising amount of space, a second rod can double the hanging room for shirts, and "
       "boxes on the top shelf hold out-of-season clothes. Put the things you wear most at "
       "eye level."),
    # ------------------------------------------------------------------ health habits
    _t("sleeping better",
       ["How can I sleep better at night?", "I keep waking up tired. Any tips for better "
        "sleep?"],
       "Keep a regular wake-up time, avoid caffeine after midday, and keep your bedroom dark, "
       "cool and free of screens.",
       "The most useful habit is getting up at the same time every day, even on weekends, "
       "which steadies your body clock. Get daylight in the morning, avoid caffeine after "
       "early afternoon, and keep the hour before bed calm and away from bright screens. A "
       "cool, dark, quiet room helps too. If you still wake up tired for weeks, it's worth "
       "talking to a doctor."),
    _t("drinking enough water",
       ["How much water should I drink a day?", "How do I remember to drink more water?"],
       "Most adults do well drinking when thirsty and aiming for pale yellow urine; keeping a "
       "bottle in sight makes it easier.",
       "Needs vary with body size, heat and exercise, so there is no single number; many "
       "adults land around 1.5 to 2 liters of fluid a day, and food provides some too. A "
       "practical check is the color of your urine: pale yellow is good. Keeping a refillable "
       "bottle on your desk and drinking a glass with each meal are easy ways to build the "
       "habit."),
    _t("starting to run",
       ["I want to start running but get out of breath fast. How should I begin?",
        "What's a good way for a beginner to start jogging?"],
       "Alternate one minute of easy jogging with two minutes of walking, three times a week, "
       "and slowly lengthen the running parts.",
       "Begin with run-walk intervals: for example, one minute of jogging at a pace where you "
       "could still talk, then two minutes of walking, repeated for 20 minutes. Do this three "
       "times a week with rest days in between, and lengthen the jogging parts a little each "
       "week. Being out of breath means you're going too fast; slow down. Comfortable shoes "
       "matter more than expensive gear."),
    _t("stretching after exercise",
       ["Should I stretch after working out?", "What stretches are good after a run?"],
       "Gentle stretches after exercise can help you feel less stiff; hold each one for 20 to "
       "30 seconds without bouncing.",
       "Stretching after exercise, while your muscles are warm, is a good time to work on "
       "flexibility and can make you feel less stiff. After a run, try calf stretches against "
       "a wall, a standing quad stretch, and a hamstring stretch with your heel on a low step. "
       "Hold each for 20 to 30 seconds, breathe normally and don't bounce. A stretch should "
       "feel like tension, never sharp pain."),
    _t("screen eye strain",
       ["My eyes hurt after a day at the computer. What can I do?", "How do I reduce eye "
        "strain from screens?"],
       "Follow the 20-20-20 rule: every 20 minutes, look at something 20 feet away for 20 "
       "seconds, and remember to blink.",
       "When we stare at screens we blink less and keep our eyes focused at one distance. The "
       "20-20-20 rule helps: every 20 minutes, look at something about 20 feet (6 meters) "
       "away for 20 seconds. Put the screen about an arm's length away and slightly below eye "
       "level, and match its brightness to the room. If the discomfort continues, an eye test "
       "can check whether you need glasses."),
    _t("minor burns",
       ["I just burned my finger on the stove. What should I do?", "What's the right first aid "
        "for a small burn?"],
       "Hold the burn under cool running water for 20 minutes, then cover it loosely with "
       "cling film or a clean dressing; don't use ice or butter.",
       "Cool the burn under cool, not icy, running water for about 20 minutes; this limits "
       "the damage even if you start a little late. Remove rings or tight items nearby before "
       "it swells. Then cover it loosely with cling film or a clean non-fluffy dressing. "
       "Don't put ice, butter or creams on it. Get medical help if the burn is larger than "
       "your palm, on the face or hands of a child, or looks white or charred."),
    _t("nosebleeds",
       ["How do I stop a nosebleed?", "My kid gets nosebleeds. What's the right way to handle "
        "one?"],
       "Sit up, lean forward, and pinch the soft part of the nose for 10 to 15 minutes without "
       "letting go.",
       "Sit down and lean forward, not back, so blood doesn't run down the throat. Pinch the "
       "soft part of the nose just below the bony bridge and keep steady pressure for 10 to 15 "
       "minutes without checking. Breathe through the mouth. Afterwards, avoid blowing the "
       "nose for a while. Get medical help if the bleeding hasn't stopped after 20 minutes or "
       "followed a blow to the head."),
    _t("exam nerves",
       ["How do I calm down before an exam?", "I get so nervous before tests that my mind "
        "goes blank. Help?"],
       "Try slow breathing: breathe in for four counts and out for six, for a minute or two, "
       "and start with a question you know.",
       "Some nervousness is normal and can even help you focus. Slow breathing, in for four "
       "counts and out for six, calms the body within a minute or two. Prepare the day before "
       "so the morning is simple, and sleep rather than cramming late. In the exam, read all "
       "the questions, start with one you're confident about, and if your mind goes blank, "
       "move on and come back later."),
    _t("building habits",
       ["How do I build a new habit that actually sticks?", "I always give up on new routines "
        "after a week. Any advice?"],
       "Start tiny, attach the habit to something you already do every day, and track it so "
       "you can see your streak.",
       "Make the new habit so small it feels almost too easy, like one push-up or one page of "
       "reading, and grow it later. Tie it to an existing routine: after I pour my morning "
       "coffee, I will write one sentence. Make it visible, for example by leaving your "
       "running shoes by the door, and mark each day you do it. If you miss a day, just "
       "don't miss two in a row."),
    _t("desk posture",
       ["How should I sit at my desk to avoid back pain?", "What's a good setup for working at "
        "a computer all day?"],
       "Keep your feet flat, your back supported, the top of the screen at eye level, and get "
       "up to move every half hour.",
       "Adjust the chair so your feet rest flat and your knees are about level with your hips, "
       "with the lower back supported. Put the top of the screen at or slightly below eye "
       "level and about an arm's length away, and keep your elbows close to your body. No "
       "position is perfect for hours, though; standing up and moving for a minute or two "
       "every half hour matters as much as the setup."),
    # ------------------------------------------------------------------ technology
    _t("strong passwords",
       ["How do I make a strong password?", "What makes a password secure?"],
       "Use a long passphrase of several random words, never reuse it across sites, and let a "
       "password manager remember the rest.",
       "Length matters more than clever symbols, so a passphrase of four or five random words "
       "is both strong and memorable. The bigger risk is reuse: if one site leaks your "
       "password, attackers try it everywhere else. A password manager can create and store a "
       "different password for every account, and turning on two-factor authentication adds "
       "a second lock."),
    _t("backing up photos",
       ["How do I back up the photos on my phone?", "I'm worried about losing my pictures if "
        "my phone breaks. What should I do?"],
       "Turn on your phone's cloud photo backup, and once in a while also copy the photos to a "
       "computer or external drive.",
       "Both major phone systems offer automatic cloud photo backup in their settings; turn "
       "it on and check it has finished while you're on Wi-Fi. Because a single copy can "
       "still be lost, also copy your photos to a computer or an external drive every few "
       "months. A simple rule is three copies, on two kinds of storage, with one kept "
       "somewhere else."),
    _t("slow laptops",
       ["My laptop has gotten really slow. How can I speed it up?", "Why is my computer so "
        "sluggish and what can I do about it?"],
       "Restart it, close programs you aren't using, remove apps that launch at startup, and "
       "make sure the disk isn't nearly full.",
       "First restart it; many slowdowns come from programs that have been running for days. "
       "Check the task manager or activity monitor for apps using lots of memory or CPU, and "
       "turn off the ones that start automatically. Keep at least some free space on the "
       "disk, install pending updates, and run a malware scan. If it's still slow, adding "
       "memory or swapping an old hard drive for an SSD makes a big difference."),
    _t("phishing emails",
       ["How can I tell if an email is a phishing scam?", "I got an email saying my bank "
        "account is locked. Is it real?"],
       "Be suspicious of urgent requests to click links or give details; check the sender's "
       "real address and go to the site yourself instead of clicking.",
       "Phishing emails often create urgency, like a locked account or an unpaid bill, and ask "
       "you to click a link or enter a password. Look at the sender's actual address, hover "
       "over links to see where they really go, and watch for generic greetings. The safest "
       "move is not to click at all: open your bank's app or type its address yourself, or "
       "call the number on your card."),
    _t("frozen apps",
       ["An app on my computer froze. How do I close it?", "What do I do when a program stops "
        "responding?"],
       "Open the task manager with Ctrl+Shift+Esc on Windows, or press Cmd+Option+Esc on a "
       "Mac, and force the app to quit.",
       "Give it a few seconds first, since it may be busy. If it stays frozen, on Windows "
       "press Ctrl+Shift+Esc to open the Task Manager, select the app and choose End task. On "
       "a Mac, press Cmd+Option+Esc, pick the app and click Force Quit. You may lose unsaved "
       "work in that app. If the same app keeps freezing, update it or restart the computer."),
    _t("weak Wi-Fi",
       ["How can I get better Wi-Fi in my apartment?", "The Wi-Fi is terrible in my bedroom. "
        "What can I do?"],
       "Move the router to a central, open spot away from walls and appliances, or add a mesh "
       "unit or extender halfway to the weak room.",
       "Routers work best in a central, raised, open spot, not hidden in a cabinet or behind "
       "the TV. Thick walls, mirrors and microwaves weaken the signal. Restarting the router "
       "and updating its firmware can help. If one room is still weak, a mesh system or an "
       "extender placed halfway between the router and that room spreads the signal further."),
    _t("taking screenshots",
       ["How do I take a screenshot on my computer?", "What's the shortcut for a screenshot?"],
       "On Windows press Windows+Shift+S; on a Mac press Cmd+Shift+4 and drag over the area "
       "you want.",
       "On Windows, Windows+Shift+S lets you select an area, and the image goes to your "
       "clipboard so you can paste it; the Print Screen key captures the whole screen. On a "
       "Mac, Cmd+Shift+3 saves the whole screen, Cmd+Shift+4 lets you drag over an area, and "
       "Cmd+Shift+5 opens a menu with more options. The files land on the desktop by default."),
    _t("learning to code",
       ["I want to learn programming. Where should I start?", "What's the best first "
        "programming language?"],
       "Start with Python through a free beginner course, and build small projects you care "
       "about as soon as you can.",
       "Python is a friendly first language because its code reads almost like English and it "
       "is used for everything from websites to data analysis. Pick one free beginner course "
       "and stick with it instead of jumping between tutorials. Practice a little every day "
       "and start small projects early, like a to-do list or a script that renames files. "
       "Getting stuck and searching for answers is part of learning."),
    _t("VPNs",
       ["What does a VPN actually do?", "Do I need a VPN?"],
       "A VPN encrypts your traffic to a server it runs, hiding it from your local network, "
       "but it doesn't make you anonymous.",
       "A VPN creates an encrypted tunnel between your device and the VPN company's server, "
       "and your traffic goes out to the internet from there. That protects you on untrusted "
       "networks like public Wi-Fi and hides your browsing from your internet provider. It "
       "does not stop websites from tracking your accounts, and you are trusting the VPN "
       "company with your traffic instead, so choose a reputable one."),
    # ------------------------------------------------------------------ science
    _t("the blue sky",
       ["Why is the sky blue?", "What makes the sky look blue during the day?"],
       "Air molecules scatter short blue wavelengths of sunlight much more than red ones, so "
       "blue light reaches us from all over the sky.",
       "Sunlight contains all colors. As it passes through the atmosphere, the tiny molecules "
       "of air scatter shorter wavelengths far more strongly than longer ones, an effect "
       "called Rayleigh scattering. Blue light is scattered in every direction, so it comes "
       "at us from the whole sky. At sunset the light crosses much more air, most of the blue "
       "is scattered away, and the reds and oranges remain."),
    _t("rainbows",
       ["How do rainbows form?", "Why do I only see rainbows when the sun is behind me?"],
       "Sunlight bends and reflects inside raindrops, which split it into colors; you see the "
       "bow with the sun behind you and rain in front.",
       "Each raindrop acts like a tiny prism: sunlight bends as it enters, reflects off the "
       "back of the drop and bends again as it leaves, and each color bends by a slightly "
       "different amount. The light comes back at an angle of about 42 degrees from the point "
       "opposite the sun, so you see a rainbow when the sun is behind you and rain is falling "
       "in front of you."),
    _t("the seasons",
       ["Why do we have seasons?", "Is summer hotter because the Earth is closer to the sun?"],
       "Seasons come from the tilt of Earth's axis, which changes how directly sunlight hits "
       "each hemisphere through the year, not from distance.",
       "Earth's axis is tilted about 23.5 degrees. For part of the year the northern half "
       "leans toward the sun: sunlight arrives more directly and days are longer, so it is "
       "summer there while it's winter in the south. Half a year later it's the other way "
       "round. Distance is not the cause; Earth is actually closest to the sun in early "
       "January."),
    _t("ocean tides",
       ["What causes the tides?", "Why are there two high tides a day?"],
       "Tides are caused mainly by the Moon's gravity pulling on the oceans, with a smaller "
       "pull from the Sun.",
       "The Moon's gravity pulls hardest on the side of Earth facing it and least on the far "
       "side, which stretches the oceans into two bulges, one toward the Moon and one away "
       "from it. As Earth turns, most coasts pass through both bulges, giving two high tides "
       "roughly every 25 hours. When the Sun and Moon line up, at new and full moon, the tides "
       "are largest."),
    _t("how vaccines work",
       ["How do vaccines work?", "What does a vaccine actually do in the body?"],
       "A vaccine shows your immune system a harmless piece or version of a germ, so it learns "
       "to recognize and fight the real thing quickly.",
       "Your immune system remembers germs it has met before. A vaccine gives it a safe "
       "preview: an inactivated or weakened germ, a piece of one, or instructions for making "
       "a harmless piece. The body makes antibodies and memory cells against it. If you later "
       "meet the real germ, those defenses respond much faster, which prevents illness or "
       "makes it milder."),
    _t("photosynthesis",
       ["What is photosynthesis?", "How do plants make their food?"],
       "Photosynthesis is how plants use sunlight to turn carbon dioxide and water into sugar, "
       "releasing oxygen as a by-product.",
       "In their leaves, plants use the green pigment chlorophyll to capture energy from "
       "sunlight. They use that energy to combine carbon dioxide from the air with water from "
       "the soil into sugars, which fuel growth and are built into stems, leaves and roots. "
       "Oxygen is released in the process, which is where much of the oxygen in the air comes "
       "from."),
    _t("floating ice",
       ["Why does ice float on water?", "Isn't a solid supposed to be denser than its liquid?"],
       "Water expands when it freezes, because its molecules lock into an open crystal, so ice "
       "is less dense than liquid water and floats.",
       "Most substances are denser as solids, but water is unusual. As it freezes, hydrogen "
       "bonds hold the molecules in an open, hexagonal lattice that takes up about 9 percent "
       "more space than the liquid. Less dense, the ice floats. That matters for life: lakes "
       "freeze from the top down, and the ice layer insulates the water below."),
    _t("the Moon's distance",
       ["How far away is the Moon?", "How long would it take to drive to the Moon?"],
       "The Moon is about 384,000 km (239,000 miles) away on average; driving at 100 km/h, "
       "that would take about five and a half months.",
       "The average distance is about 384,400 kilometers, or roughly 239,000 miles, and it "
       "varies a little because the orbit is an ellipse. Light covers it in about 1.3 "
       "seconds. A car at 100 km/h without stopping would need around 160 days, a bit over "
       "five months, while the Apollo astronauts took about three days."),
    _t("weather and climate",
       ["What's the difference between weather and climate?", "If it's cold today, doesn't "
        "that disprove global warming?"],
       "Weather is what the atmosphere does on a given day; climate is the average pattern "
       "over decades, so one cold day says little about climate.",
       "Weather is the short-term state of the atmosphere: today's rain, wind and "
       "temperature. Climate is the long-term average and range of weather in a place, "
       "usually measured over 30 years or more. A cold week is weather; a trend of warmer "
       "decades is climate. A useful saying is that climate is what you expect and weather is "
       "what you get."),
    _t("black holes",
       ["What is a black hole?", "How does a black hole form?"],
       "A black hole is a region where gravity is so strong that nothing, not even light, can "
       "escape; many form when huge stars collapse.",
       "When a very massive star runs out of fuel, its core can collapse under its own "
       "gravity into an incredibly dense object. Around it is a boundary called the event "
       "horizon: anything that crosses it, including light, can't get back out. We can't see "
       "black holes directly, but we detect them by their effects, such as stars orbiting "
       "them and glowing gas falling in."),
    _t("autumn leaves",
       ["Why do leaves change color in the fall?", "Where do the red and yellow colors of "
        "autumn come from?"],
       "As days shorten, trees stop making green chlorophyll, revealing yellow and orange "
       "pigments that were there all along; reds are made fresh.",
       "Leaves are green because of chlorophyll, which the tree constantly replaces during the "
       "growing season. In autumn, shorter days and cooler nights make the tree stop, and as "
       "chlorophyll breaks down, yellow and orange pigments that were hidden underneath show "
       "through. Reds and purples come from pigments some trees produce in autumn, especially "
       "after sunny days and cool nights."),
    _t("honey",
       ["How do bees make honey?", "What is honey actually made of?"],
       "Bees collect flower nectar, add enzymes, and fan it in the hive until most of the "
       "water evaporates, leaving thick honey.",
       "Worker bees drink nectar from flowers and carry it back to the hive, where enzymes "
       "they add start breaking its sugars into simpler ones. They spread it in wax cells and "
       "fan it with their wings until enough water evaporates to make it thick and resistant "
       "to spoiling, then cap the cells with wax. The honey feeds the colony through winter."),
    # ------------------------------------------------------------------ money
    _t("making a budget",
       ["How do I make a simple monthly budget?", "I never know where my money goes. How do "
        "I start budgeting?"],
       "List your monthly income, track a month of spending, then set limits for each "
       "category and plan to save something first.",
       "Start by tracking every expense for a month, using your bank app or a notebook, so "
       "you know where the money really goes. Then list your income and your fixed costs such "
       "as rent and bills, and give the rest a job: groceries, transport, fun, savings. A "
       "common starting point is roughly half for needs, 30 percent for wants and 20 percent "
       "for savings, adjusted to your situation. Review it each month."),
    _t("emergency funds",
       ["What is an emergency fund and how much should I have?", "How do I start saving for "
        "emergencies?"],
       "An emergency fund is cash set aside for surprises; aim first for a small cushion, then "
       "three to six months of essential expenses.",
       "An emergency fund covers unexpected costs like a car repair or a gap in income, so you "
       "don't need to borrow. Start with a modest goal, maybe one month of essentials, and "
       "build toward three to six months. Keep it in a separate savings account that's easy "
       "to reach but not mixed with your spending money, and set up an automatic transfer on "
       "payday."),
    _t("credit card debt",
       ["How should I pay off my credit card debt?", "I have three credit cards with balances. "
        "Which should I pay first?"],
       "Pay the minimum on every card, then put every extra dollar toward the card with the "
       "highest interest rate until it's gone.",
       "Always pay at least the minimum on every card to avoid fees. Then put any extra money "
       "toward one card at a time: the highest interest rate first saves the most money, "
       "while the smallest balance first gives quick wins that keep some people motivated. "
       "Stop adding new charges while you pay down, and ask your card issuer whether a lower "
       "rate is available."),
    _t("saving for a purchase",
       ["How can I save up for something expensive, like a new bike?", "What's a good way to "
        "save for a big purchase?"],
       "Divide the price by the months until you want it, set up an automatic transfer of that "
       "amount, and keep the savings in a separate account.",
       "Decide the price and the date you want it by, and divide to get a monthly amount. "
       "Automate a transfer of that amount into a separate savings account on payday so you "
       "never see it in your spending money. Cutting one regular expense can fund it. "
       "Meanwhile, watch for sales or good second-hand options, which can move the date "
       "closer."),
    _t("compound interest",
       ["What is compound interest?", "Why do people say to start saving early?"],
       "Compound interest means you earn interest on your interest too, so savings grow faster "
       "the longer they are left alone.",
       "With compound interest, the interest you earn is added to your balance and then earns "
       "interest itself. At 5 percent a year, 1,000 becomes 1,050 after one year, then 1,102.50 "
       "after two, and the growth keeps speeding up. That is why starting early matters: money "
       "saved in your twenties has decades to compound. It works against you on debt, too."),
    _t("unit prices",
       ["How do I know which size of a product is the better deal?", "Is the bigger package "
        "always cheaper?"],
       "Compare the price per unit, such as per 100 grams or per liter; bigger packages are "
       "often cheaper per unit but not always.",
       "Divide the price by the quantity to get the price per unit, for example per 100 grams, "
       "per liter or per item; many shops print this on the shelf label. Bigger packs are "
       "often cheaper per unit, but not always, especially when a smaller size is on sale. "
       "And a bulk deal only saves money if you use it all before it goes off."),
    # ------------------------------------------------------------------ learning and work
    _t("learning a language",
       ["What's the best way to learn a new language?", "I want to learn Spanish. How should "
        "I start?"],
       "Practice a little every day, learn the most common words first, and start speaking "
       "with real people early, even badly.",
       "Short daily practice beats long weekly sessions. Begin with the few hundred most "
       "common words and basic phrases, and use a spaced-repetition app to review them. "
       "Listen to the language a lot, through podcasts, shows or music, and start speaking "
       "early with a tutor or exchange partner; mistakes are how you learn. Reading simple "
       "stories builds vocabulary in context."),
    _t("memorizing vocabulary",
       ["How can I memorize vocabulary faster?", "I forget new words a day after learning "
        "them. What helps?"],
       "Use spaced repetition: review each word just as you're about to forget it, at growing "
       "intervals, and test yourself instead of rereading.",
       "Forgetting is normal; the trick is reviewing at the right times. Spaced repetition "
       "shows you a word again after a day, then a few days, then a week, and so on, which "
       "flashcard apps can schedule for you. Try to recall the meaning before flipping the "
       "card, because active recall works better than rereading. Learning words in example "
       "sentences and using them out loud also helps them stick."),
    _t("cover letters",
       ["How do I write a good cover letter?", "What should a cover letter include?"],
       "Keep it to one page: say which job you want, give two or three concrete examples that "
       "match the posting, and end with a clear next step.",
       "Address it to a person if you can, and open by naming the role and why it interests "
       "you. Then pick two or three requirements from the job posting and show, with specific "
       "examples and numbers where possible, how you've done that kind of work. Keep it under "
       "one page, write a fresh one for each job, and close by saying you'd welcome the "
       "chance to talk."),
    _t("job interviews",
       ["How should I prepare for a job interview?", "I have an interview tomorrow. What "
        "should I do tonight?"],
       "Research the company, prepare short stories about your past work for common "
       "questions, and have two questions of your own ready.",
       "Read the job description and the company's website so you know what they do and what "
       "they need. Prepare short stories about your experience using situation, task, action "
       "and result, for questions like tell me about a challenge you faced. Practice out loud "
       "once. Plan your route or test your video call, lay out your clothes, and prepare two "
       "thoughtful questions to ask them. Then get a good night's sleep."),
    _t("giving presentations",
       ["How do I give a good short presentation?", "I'm terrified of public speaking. Any "
        "tips for my talk next week?"],
       "Build it around one main message, use few words on the slides, and rehearse out loud "
       "several times, timing yourself.",
       "Decide the one thing you want the audience to remember and build around it, with "
       "three supporting points at most. Keep slides simple, with more pictures than text, "
       "and don't read them aloud. Rehearse out loud at least three times with a timer, "
       "ideally once in front of a friend. Nerves are normal; slow breathing beforehand and a "
       "well-practiced first minute get you started smoothly."),
    _t("taking notes",
       ["How can I take better notes in class?", "What's a good note-taking method?"],
       "Write key ideas in your own words rather than copying everything, leave space for "
       "questions, and review your notes within a day.",
       "Don't try to write everything down; capture main ideas and examples in your own "
       "words, which makes you process them. One popular layout splits the page into a notes "
       "column, a narrow column for keywords and questions, and a summary at the bottom. The "
       "most important step comes later: review your notes within a day and test yourself on "
       "the questions."),
    _t("thank-you notes",
       ["How do I write a thank-you note?", "What should I say in a thank-you card for a "
        "gift?"],
       "Name the gift or favor, say specifically why it meant something to you, and end with a "
       "warm line about the person.",
       "Keep it short and specific. Open by thanking them for the exact gift or favor, then "
       "add a sentence about how you'll use it or why it mattered, for example that the "
       "cookbook already gave you a new favorite dinner. Finish with something warm about "
       "them or your plans to see them. Sending it within a week or two is ideal, but a late "
       "note is still better than none."),
    _t("focusing while studying",
       ["How do I stay focused when studying?", "I keep getting distracted by my phone when I "
        "study. What can I do?"],
       "Put your phone in another room, work in 25-minute blocks with 5-minute breaks, and "
       "decide before each block exactly what you'll do.",
       "Distractions win when they're within reach, so put your phone in another room or use "
       "an app blocker. Work in focused blocks, such as 25 minutes on and 5 minutes off, and "
       "before each block write down the specific task, like finish five practice problems, "
       "not just study. Take a longer break after a few blocks, and study at the same place "
       "and time when you can."),
    _t("asking for a raise",
       ["How do I ask my boss for a raise?", "When is a good time to ask for a pay rise?"],
       "Ask for a meeting, bring a short list of your results and market pay data, and name a "
       "specific figure.",
       "Good timing helps: after a successful project or before budgets are set, not during a "
       "crisis. Ask for a dedicated meeting instead of bringing it up in passing. Prepare "
       "concrete evidence of your contributions and research what similar roles pay. State a "
       "specific number, stay calm and professional, and if the answer is not now, ask what "
       "you'd need to achieve and when you can revisit it."),
    _t("running meetings",
       ["How do I run a short, useful meeting?", "Our team meetings always run long. How do "
        "we fix that?"],
       "Send an agenda with a goal beforehand, invite only who's needed, keep to time, and end "
       "by writing down who does what by when.",
       "Every meeting should have a clear purpose, so send a short agenda in advance that says "
       "what needs deciding. Invite only the people needed for that, start on time, and keep "
       "a timer on each item. Park side topics for later. In the last few minutes, summarize "
       "decisions and list each action with an owner and a deadline, and send that summary "
       "right after."),
    # ------------------------------------------------------------------ travel
    _t("packing light",
       ["How do I pack light for a weekend trip?", "How can I fit a week of clothes in a "
        "carry-on?"],
       "Pick clothes in a few colors that all match, plan to re-wear items, roll them, and "
       "wear your bulkiest shoes on the trip.",
       "Choose a small color palette so every top works with every bottom, and plan outfits "
       "before packing. Re-wearing is fine; a week rarely needs more than three or four tops. "
       "Rolling clothes or using packing cubes saves space, toiletries can go in small "
       "refillable bottles, and wearing your heaviest shoes and jacket on the journey keeps "
       "them out of the bag."),
    _t("jet lag",
       ["How can I get over jet lag faster?", "What's the best way to avoid jet lag on a long "
        "flight east?"],
       "Switch to the new time zone's schedule right away, get outdoor daylight in the "
       "morning, and keep naps short.",
       "Your body clock adjusts about an hour or so a day, and light is the main thing that "
       "shifts it. On arrival, eat and sleep on local time, spend time outside in daylight, "
       "especially in the morning after flying east, and avoid long naps. A few days before "
       "the trip you can shift your bedtime toward the destination's schedule. Drinking "
       "water and limiting alcohol on the flight also help."),
    _t("cheap flights",
       ["How do I find cheap flights?", "When is the best time to book a flight?"],
       "Be flexible with dates and airports, compare prices on a search site with a price "
       "alert, and book a few weeks to a couple of months ahead.",
       "Flexibility saves the most: use a search site's calendar view to compare nearby dates "
       "and check other airports in the area. Set a price alert for your route so you hear "
       "when fares drop. For many trips, booking one to three months ahead works well, and "
       "midweek flights are often cheaper. Check baggage fees before booking, since a cheap "
       "fare can end up costing more."),
    _t("passport safety",
       ["How do I keep my passport safe while traveling?", "What should I do if I lose my "
        "passport abroad?"],
       "Keep it in a hotel safe or an inside pocket, carry a photo of it, and if it's lost, "
       "report it to police and contact your embassy.",
       "Carry your passport in a zipped inside pocket or money belt when you need it, and in "
       "the hotel safe when you don't. Keep a photo or photocopy separate from the original "
       "and a digital copy in your email. If it is lost or stolen, report it to the local "
       "police and contact your country's nearest embassy or consulate, which can issue an "
       "emergency travel document."),
    _t("lost luggage",
       ["The airline lost my suitcase. What should I do?", "My bag didn't arrive at baggage "
        "claim. What now?"],
       "Report it at the airline's baggage desk before leaving the airport, keep the reference "
       "number, and save receipts for essentials you buy.",
       "Go to the airline's baggage service desk before you leave the airport and file a "
       "report; you'll get a reference number to track the bag. Give them an address where "
       "they can deliver it. Keep receipts for essentials like toiletries and a change of "
       "clothes, since airlines often reimburse reasonable costs. Most delayed bags turn up "
       "within a few days; if not, file a formal claim within the airline's deadline."),
    # ------------------------------------------------------------------ plants and pets
    _t("watering houseplants",
       ["How often should I water my houseplants?", "My houseplants keep dying. What am I "
        "doing wrong?"],
       "Water when the top few centimeters of soil feel dry, not on a fixed schedule, and make "
       "sure the pot drains.",
       "Overwatering kills more houseplants than thirst. Push a finger into the soil and water "
       "only when the top two or three centimeters are dry, then water thoroughly until it "
       "runs out of the bottom. Pots need drainage holes, and saucers should be emptied. Also "
       "check the light: most plants sold as houseplants want bright, indirect light near a "
       "window."),
    _t("growing tomatoes",
       ["How do I grow tomatoes at home?", "Can I grow tomatoes on a balcony?"],
       "Give tomatoes a sunny spot with six to eight hours of sun, a big pot or bed, a stake "
       "for support, and deep regular watering.",
       "Tomatoes need warmth and sun, at least six to eight hours a day, so a sunny balcony "
       "works well. Use a large pot, around 20 liters or more, with good potting mix, and "
       "plant after the last frost. Tie the stem to a stake or cage as it grows. Water deeply "
       "and regularly, since uneven watering causes split fruit, and feed with a tomato "
       "fertilizer once flowers appear."),
    _t("composting",
       ["How do I start composting at home?", "What can I put in a compost bin?"],
       "Mix green scraps like fruit and vegetable peels with brown material like dry leaves "
       "or cardboard, keep it damp, and turn it now and then.",
       "A compost pile needs a mix of greens, such as fruit and vegetable scraps, coffee "
       "grounds and grass clippings, and browns, such as dry leaves, shredded cardboard and "
       "paper. Aim for more browns than greens, keep it about as damp as a wrung-out sponge, "
       "and turn it every week or two to let air in. Leave out meat, dairy and oily food, "
       "which attract pests. In a few months you'll have dark, crumbly compost."),
    _t("teaching a dog to sit",
       ["How do I teach my dog to sit?", "What's the easiest first trick to teach a puppy?"],
       "Hold a treat above the dog's nose and move it back over its head; when its bottom "
       "touches the floor, say yes and give the treat.",
       "Hold a small treat just in front of your dog's nose and slowly move it up and back "
       "over the head. As the head follows the treat, the bottom naturally goes down. The "
       "moment it touches the floor, say yes or click and give the treat. Repeat in short, "
       "happy sessions of a few minutes, and add the word sit once the dog does it reliably. "
       "Then practice in different rooms."),
    _t("introducing a new cat",
       ["How do I introduce a new cat to my other cat?", "My new kitten and my old cat hate "
        "each other. What should I do?"],
       "Keep the new cat in its own room at first, swap bedding so they learn each other's "
       "scent, and let them meet gradually.",
       "Cats are territorial, so slow introductions work best. Give the newcomer its own room "
       "with food, water and a litter box for a few days. Swap blankets between the cats so "
       "they get used to each other's scent, then feed them on either side of a closed door. "
       "Next, let them see each other through a gate or cracked door, and only then allow "
       "short supervised meetings. Hissing early on is normal."),
    _t("feeding goldfish",
       ["How often should I feed my goldfish?", "How much food does a goldfish need?"],
       "Feed a goldfish once or twice a day, only as much as it eats in about two minutes, and "
       "remove leftovers.",
       "Goldfish are happy with one or two small meals a day. Give only what they finish in "
       "about two minutes, because uneaten food rots and fouls the water, which is a more "
       "common problem than hunger. Healthy adult goldfish can go a few days without food, so "
       "skipping a day now and then is fine. A tank with a filter and regular partial water "
       "changes matters as much as the feeding."),
    _t("succulent care",
       ["How do I take care of a succulent?", "Why is my succulent getting tall and "
        "stretched?"],
       "Give succulents lots of light and water them only when the soil is completely dry; "
       "stretching means they need more sun.",
       "Succulents store water in their leaves, so they want well-draining cactus soil, a pot "
       "with a drainage hole and a thorough watering only when the soil is completely dry, "
       "often every one to two weeks and less in winter. They need plenty of light; a plant "
       "that grows tall and pale with gaps between leaves is stretching toward light and "
       "needs a sunnier spot."),
    # ------------------------------------------------------------------ numbers and words
    _t("calculating tips",
       ["How do I quickly work out a 15 percent tip?", "What's an easy way to calculate "
        "percentages in my head?"],
       "Find 10 percent by moving the decimal point one place left, then add half of that: on "
       "40, 10 percent is 4 and 15 percent is 6.",
       "Ten percent is easy: move the decimal point one place to the left, so 10 percent of "
       "64 is 6.40. From there, 5 percent is half of that, 3.20, and 15 percent is the two "
       "added together, 9.60. Twenty percent is double the 10 percent. This works for any "
       "percentage you can build from 10 and 5 percent pieces."),
    _t("Celsius and Fahrenheit",
       ["How do I convert Celsius to Fahrenheit?", "What's 20 degrees Celsius in "
        "Fahrenheit?"],
       "Multiply by 9, divide by 5 and add 32; for example, 20 °C is 68 °F.",
       "The exact formula is F = C × 9/5 + 32, so 20 °C is 20 × 1.8 + 32 = 68 °F. For a quick "
       "estimate in your head, double the Celsius number and add 30, which gives 70 for 20 "
       "°C. To go back, subtract 32 and multiply by 5/9. Useful anchors: water freezes at 0 "
       "°C (32 °F) and boils at 100 °C (212 °F)."),
    _t("affect and effect",
       ["What's the difference between affect and effect?", "Is it 'the weather affected my "
        "mood' or 'effected'?"],
       "Usually affect is the verb and effect is the noun: the weather affected my mood; the "
       "weather had an effect on my mood.",
       "In everyday writing, affect is a verb meaning to influence, and effect is a noun "
       "meaning a result. So the rain affected the game, and the rain had a big effect on the "
       "game. A memory trick is that affect is the action. There are rarer uses, like effect "
       "as a verb meaning to bring about, as in to effect change, but the first rule covers "
       "most cases."),
    _t("its and it's",
       ["When do I use its versus it's?", "Is it 'the dog wagged it's tail' or 'its tail'?"],
       "It's always means it is or it has; its shows possession: the dog wagged its tail.",
       "It's with an apostrophe is only ever a contraction of it is or it has, as in it's "
       "raining or it's been a long day. Its without an apostrophe is possessive, like his or "
       "her: the dog wagged its tail. A quick test is to replace the word with it is; if the "
       "sentence still makes sense, write it's, otherwise write its."),
    _t("the area of a circle",
       ["How do I find the area of a circle?", "What's the formula for a circle's area?"],
       "Multiply pi, about 3.14, by the radius squared: a circle with a 3 cm radius has an "
       "area of about 28.3 square cm.",
       "The area is pi times the radius squared, A = πr². The radius is half the diameter. "
       "For a circle with a radius of 3 cm, square the radius to get 9, then multiply by "
       "about 3.14 to get roughly 28.3 square centimeters. If you only know the diameter, "
       "halve it first; forgetting that step is the most common mistake."),
    _t("splitting a bill",
       ["What's a fair way to split a restaurant bill?", "How do we split rent fairly between "
        "roommates with different rooms?"],
       "Split shared costs evenly and individual items by who ordered them, or split in "
       "proportion to what each person uses or earns.",
       "For a meal, the simplest fair method is to pay for what you ordered and split shared "
       "dishes and the tip evenly; a bill-splitting app does the sums. For rent, many "
       "roommates split by room size: add up the private floor areas, give each person a "
       "share in proportion, and split the shared spaces equally. Whatever you choose, agree "
       "on it before the bill arrives."),
    _t("kilometers and miles",
       ["How do I convert kilometers to miles?", "How many miles is a 10K run?"],
       "Multiply kilometers by about 0.62; a 10 km run is about 6.2 miles.",
       "One kilometer is about 0.621 miles, so multiply by 0.62 to convert, and divide by it "
       "to go back. A 5K is about 3.1 miles and a 10K about 6.2. For a quick mental estimate, "
       "take half the kilometers and add a tenth: for 10 km, 5 plus 1 makes 6 miles, close "
       "enough for most purposes."),
    # ------------------------------------------------------------------ people
    _t("remembering names",
       ["How can I get better at remembering people's names?", "I forget names seconds after "
        "I hear them. Any tricks?"],
       "Repeat the name as soon as you hear it, use it once in the conversation, and link it "
       "to something memorable about the person.",
       "We often forget names because we're thinking about what to say next. Make a point of "
       "listening, then repeat it right away: nice to meet you, Priya. Use it once more while "
       "talking and again when you say goodbye. Linking the name to a picture or to someone "
       "you know with the same name helps it stick, and it's fine to ask again early on."),
    _t("apologizing",
       ["How do I apologize properly?", "I hurt a friend's feelings. How do I say sorry the "
        "right way?"],
       "Say clearly what you did, acknowledge how it affected them without making excuses, "
       "and say what you'll do differently.",
       "A good apology names what you did, for example I'm sorry I made fun of your idea in "
       "front of everyone. Acknowledge how it affected the other person and avoid buts or "
       "excuses, which undo the apology. Say what you'll do differently, and if there's "
       "something to repair, offer to. Then give them time; they may need a while before "
       "they're ready to move on."),
    _t("small talk",
       ["How do I get better at small talk?", "I never know what to say at parties. Help?"],
       "Ask open questions about the other person, listen for details you can follow up on, "
       "and share a little about yourself in return.",
       "Small talk gets easier when you focus on curiosity instead of being interesting. Open "
       "questions work well: how do you know the host, what's keeping you busy these days. "
       "Listen for a detail you can ask more about, and share something related about "
       "yourself so it doesn't feel like an interview. Having a couple of starters ready, "
       "like something you recently watched or read, takes off the pressure."),
    _t("saying no at work",
       ["How do I politely say no to extra work?", "My coworkers keep giving me their tasks. "
        "How do I refuse without seeming rude?"],
       "Be brief and friendly, explain your current priorities, and offer an alternative if "
       "you can, like a later date.",
       "You don't need a long justification. Thank them for thinking of you, then say "
       "plainly that you can't take it on because of what you're already committed to. If "
       "you want to help, offer something smaller or later: I can't this week, but I could "
       "look at it on Monday. If your manager is the one asking, ask which of your current "
       "tasks should move down the list."),
    _t("supporting a sad friend",
       ["My friend is going through a hard time. How can I support them?", "What should I say "
        "to a friend who just lost their job?"],
       "Listen more than you talk, acknowledge that it's hard, and offer specific help, like "
       "bringing dinner, rather than a vague offer.",
       "Often the most helpful thing is to listen without rushing to fix the problem or "
       "compare it with your own experience. Saying that sounds really hard, I'm here, goes "
       "a long way. Offer concrete help, such as a meal, a walk or looking over their CV, "
       "instead of let me know if you need anything. Check in again a week later; support "
       "often fades just when people need it. If they talk about harming themselves, help "
       "them reach a professional or a crisis line."),
    _t("budget birthday parties",
       ["How can I throw a birthday party on a small budget?", "Any ideas for a cheap but fun "
        "birthday party?"],
       "Host at home or in a park, make it a potluck, do your own decorations, and plan one or "
       "two simple games.",
       "The biggest savings come from the venue and the food, so host at home or in a park "
       "and make it a potluck or serve one simple dish like homemade pizza. Paper decorations "
       "and a playlist go a long way. Plan one or two easy activities, such as a scavenger "
       "hunt or a themed quiz, and send invitations by message instead of cards. A homemade "
       "cake often means more than an expensive one."),
    _t("wedding toasts",
       ["How do I write a wedding toast?", "I'm giving a toast at my brother's wedding. How "
        "long should it be?"],
       "Keep it to two or three minutes: introduce yourself, share one warm story about the "
       "couple, and end by raising a glass to them.",
       "Aim for two to three minutes. Start by saying who you are and how you know the "
       "couple, then tell one short, warm story that shows something good about them, ideally "
       "about both of them. Skip in-jokes and embarrassing stories. Finish with a wish for "
       "their future and invite everyone to raise a glass. Practice it aloud several times "
       "and bring notes on a card."),
    # ------------------------------------------------------------------ safety
    _t("smelling gas",
       ["I think I smell gas in my apartment. What should I do?", "What do I do if I smell a "
        "gas leak at home?"],
       "Leave right away without switching anything on or off, then call the gas emergency "
       "line or emergency services from outside.",
       "Don't touch light switches, appliances or anything that could make a spark, and don't "
       "light anything. If it's easy and safe, open doors and windows and turn off the gas at "
       "the meter on your way out. Get everyone outside, away from the building, and call the "
       "gas emergency number or emergency services from there. Don't go back in until they "
       "say it's safe."),
    _t("possible poisoning",
       ["My toddler may have swallowed some cleaning liquid. What do I do?", "What should I do "
        "if a child swallows something poisonous?"],
       "Call your poison control center or emergency number right away, keep the product "
       "label, and don't try to make the child vomit.",
       "Act immediately: call your local poison control center or emergency number and "
       "follow their instructions. Have the container with you so you can read out the "
       "ingredients. Don't make the child vomit unless you're told to, since some products "
       "do more damage coming back up. If the child is drowsy, having trouble breathing or "
       "having a seizure, call emergency services at once."),
    _t("smoke alarms",
       ["How do I check that my smoke alarm works?", "How often should I test smoke "
        "detectors?"],
       "Press and hold the test button once a month until it beeps, replace batteries as the "
       "maker says, and replace the alarm every ten years.",
       "Press and hold the test button on each alarm once a month; a loud beep means the "
       "battery and siren work. Replace batteries once a year or when the alarm chirps, unless "
       "it has a sealed ten-year battery. Alarms wear out, so replace the whole unit about "
       "every ten years; the date is usually printed on the back. Have one on every floor, "
       "especially near bedrooms."),
    _t("driving in fog",
       ["How do I drive safely in fog?", "Should I use high beams in fog?"],
       "Slow down, leave a much bigger gap, and use low beams or fog lights; high beams "
       "reflect off the fog and make it harder to see.",
       "Reduce your speed so you can stop within the distance you can see, and leave far more "
       "space than usual to the car ahead. Use low beams and fog lights if you have them; "
       "high beams bounce off the water droplets and blind you. Turn off the radio and open a "
       "window slightly to hear traffic. If it gets too thick, pull well off the road, turn "
       "on your hazard lights and wait."),
]


#: Held-out questions with no preference pairs: evaluation prompts only, on subjects that no
#: topic above covers (so the judge's verdict rests on more prompts than the held-out topics
#: give). (subject, question)
EVAL_ONLY: list[tuple[str, str]] = [
    ("ironing shirts", "What's the easiest way to iron a dress shirt?"),
    ("removing grass stains", "How do I get grass stains out of jeans?"),
    ("sharpening knives", "How often should I sharpen my kitchen knives, and how?"),
    ("defrosting a freezer", "What's the quickest safe way to defrost a freezer?"),
    ("baking bread", "Why didn't my homemade bread rise?"),
    ("freezing soup", "Can I freeze soup, and how long does it keep?"),
    ("seasoning cast iron", "How do I season a cast iron pan?"),
    ("making pancakes", "How do I make pancakes fluffy?"),
    ("storing potatoes", "Where should I store potatoes so they don't sprout?"),
    ("cooking pasta", "Should I add oil to the water when cooking pasta?"),
    ("washing vegetables", "Do I need to wash vegetables that I'm going to peel?"),
    ("reading food labels", "What should I look at first on a nutrition label?"),
    ("packing a lunch", "What are some easy lunches I can pack for work?"),
    ("hiccups", "How can I get rid of hiccups?"),
    ("sunburn", "What should I do about a mild sunburn?"),
    ("bee stings", "What should I do right after a bee sting?"),
    ("staying warm outdoors", "How do I stay warm on a long winter walk?"),
    ("hand washing", "How long should I wash my hands for?"),
    ("morning routines", "How can I make my mornings less rushed?"),
    ("napping", "How long should a nap be so I don't wake up groggy?"),
    ("posture while walking", "How can I improve my posture when I walk?"),
    ("choosing running shoes", "What should I look for when buying running shoes?"),
    ("cycling to work", "What do I need to start cycling to work?"),
    ("checking tire pressure", "How do I check the tire pressure on my car?"),
    ("jump-starting a car", "How do I jump-start a car with a dead battery?"),
    ("parallel parking", "Any tips for parallel parking?"),
    ("saving fuel", "How can I use less fuel when I drive?"),
    ("reading more books", "How can I find time to read more books?"),
    ("writing a diary", "Is keeping a diary worth it, and how do I start?"),
    ("writing clear emails", "How do I write an email that people actually read?"),
    ("public libraries", "What can I do at a public library besides borrowing books?"),
    ("learning to swim", "Is it too late to learn to swim as an adult?"),
    ("learning guitar", "How should a beginner practise guitar?"),
    ("drawing", "How can I get better at drawing?"),
    ("knitting", "What do I need to start knitting?"),
    ("birdwatching", "How do I get started with birdwatching?"),
    ("stargazing", "What's the best way to see stars from a city?"),
    ("choosing a houseplant", "Which houseplants are hard to kill?"),
    ("mowing the lawn", "How short should I cut my lawn?"),
    ("raking leaves", "Should I rake the leaves in my garden or leave them?"),
    ("painting a room", "How do I paint a room without making a mess?"),
    ("changing a light bulb", "How do I safely change a light bulb that just burned out?"),
    ("fixing a running toilet", "My toilet keeps running. How do I fix it?"),
    ("moving house", "How should I plan a move to a new apartment?"),
    ("decluttering", "Where do I start when decluttering my home?"),
    ("recycling", "How do I know what I can put in the recycling bin?"),
    ("buying a used car", "What should I check before buying a used car?"),
    ("comparing phone plans", "How do I pick a phone plan that suits me?"),
    ("renting an apartment", "What should I ask before signing a lease?"),
    ("tipping abroad", "How do I know how much to tip when I travel abroad?"),
    ("travel insurance", "Do I need travel insurance for a short trip?"),
    ("writing a resume", "How long should my resume be?"),
    ("asking for feedback", "How do I ask my manager for feedback?"),
    ("working from home", "How do I stay productive when working from home?"),
    ("making friends as an adult", "How can I make new friends after moving to a new city?"),
    ("keeping plants alive on holiday", "How do I keep my plants watered while I'm on "
     "holiday?"),
]

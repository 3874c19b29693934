"""Sentence banks of the sample generator: what generated conversations say.

Plain data, kept apart from the generator's logic in `sample_data.py`.
"""

from __future__ import annotations


def _lines(block: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in block.strip().splitlines() if line.strip())


DOMAIN_USER = {
    "support": _lines("""
        I need help with my account, it has been a problem since yesterday.
        Can you check what is going on with my subscription?
        I already contacted support twice and nobody answered my ticket.
        My order number is in the email I got last week.
        Is there a way to speak to a human agent about this?
        I updated my email address but the old one still receives the invoices.
        Please tell me how long this usually takes to resolve.
        I’m using the mobile app on an iPhone, if that matters.
        The confirmation email never arrived, not even in spam.
        Could you escalate this, it is quite urgent for my business.
    """),
    "troubleshooting": _lines("""
        I keep getting an error when I open the app.
        The app crashes right after the splash screen.
        I tried to reinstall it but the install fails at 80 percent.
        Restarting the computer did not fix anything.
        The error log says the connection timed out.
        It worked fine until the last update, now it freezes every few minutes.
        I cleared the cache and it still crashes.
        Is there a way to roll back to the previous version?
        The installer says a required driver is missing.
        I’m on Windows 11 with the latest updates installed.
        My laptop is a MacBook Air running macOS Sonoma.
        The same error happens on my phone too.
    """),
    "emotional_support": _lines("""
        I have been feeling really anxious lately and I can’t sleep.
        Everything feels overwhelming at the moment.
        I feel lonely even when I am surrounded by people.
        I am so tired of pretending that I am fine.
        Some days I feel hopeful, other days I just feel sad.
        My friends say I should talk to someone, so here I am.
        I worry that I am letting everyone down.
        It helps a little to write down how I feel.
        I feel guilty for taking a day off.
        My heart races whenever I think about Monday.
        I miss how things used to be.
    """),
    "creative_writing": _lines("""
        I am working on a short story about a lighthouse keeper.
        Can you help me make the main character more believable?
        The plot feels slow in the middle chapter.
        I want the ending to surprise the reader without feeling cheap.
        Here is the opening line of my draft, what do you think?
        I love the idea of a story told backwards.
        My poem uses the sea as a metaphor for memory.
        I’m not sure whether to write it in first or third person.
        The dialogue between the two sisters sounds stiff to me.
        The story is set in a small village near Lyon, in a café called Le Péché.
    """),
    "coding": _lines("""
        I get a traceback when I run my Python script.
        The function returns None instead of the list I expect.
        My SQL query is very slow on a table with ten million rows.
        Should I add an index on the customer_id column?
        The API returns a 401 error even though my token is valid.
        I am getting a KeyError when I read the JSON response.
        How do I write a unit test for this function?
        The exception only happens in production, not on my machine.
        I used a LEFT JOIN but I get duplicate rows.
        My loop takes forever on a large file, is there a faster way?
    """),
}

DOMAIN_ASSISTANT = {
    "support": _lines("""
        I’m sorry about the trouble, let me look into your account.
        I can see the request on our side and I have escalated it.
        You should receive a confirmation email within the next hour.
        For security reasons I cannot share account details in this chat.
        I have added a note to your ticket so the next agent sees the full history.
        Thanks for your patience, I know this has taken longer than it should.
        Is there anything else I can help you with today?
        Please check your spam folder as well, just in case.
        I have updated the settings, it may take a few minutes to apply.
    """),
    "troubleshooting": _lines("""
        Let’s try to fix this step by step.
        First, please uninstall the app and install the latest version again.
        Can you share the exact error message or a screenshot of it?
        This crash is a known issue in version 4.2, a fix is on the way.
        Please try clearing the cache and restarting the device.
        Could you check whether your firewall blocks the connection?
        If the error persists, send us the log file from the settings page.
        Updating the graphics driver usually fixes this kind of crash.
        Try running the installer as an administrator.
        That error usually means the download was incomplete.
    """),
    "emotional_support": _lines("""
        Thank you for sharing that with me, it takes courage.
        It sounds like you are carrying a lot right now.
        Your feelings are valid, and it is okay to not be okay.
        Would it help to try a short breathing exercise together?
        Be gentle with yourself, you are doing the best you can.
        Talking to someone you trust can make a real difference.
        If you ever feel unsafe, please contact a local crisis line right away.
        What is one small thing that usually brings you comfort?
        It is completely understandable to feel anxious in this situation.
        I’m glad you reached out today.
    """),
    "creative_writing": _lines("""
        What a lovely premise, the lighthouse gives you a strong image to build on.
        Try giving your character a clear want and a hidden fear.
        You could tighten the middle by cutting the second flashback.
        A twist works best when the clues were there all along.
        Reading the dialogue aloud often shows where it sounds stiff.
        First person would make the reader feel closer to her doubts.
        Here is an alternative opening line you could play with.
        The metaphor is strong, consider repeating it in the final stanza.
        Show the emotion through action rather than naming it.
    """),
    "coding": _lines("""
        The function returns None because the return statement is inside the loop.
        Adding an index on that column should make the query much faster.
        A 401 error usually means the Authorization header is missing or malformed.
        Use dict.get to avoid the KeyError when the field is optional.
        Here is a corrected version of your function.
        You can use pytest and write a small test for each case.
        The duplicates come from the join, group by the key first.
        Reading the file in chunks will keep the memory usage low.
        Check the logs in production, the environment variables may differ.
        Consider using a set for the lookups, it makes the loop linear.
    """),
}

TOPIC_USER = {
    "topic-password-reset": _lines("""
        I forgot my password and the reset link does not work.
        The password reset email says the link has expired.
        I can’t log in after changing my password.
    """),
    "topic-billing-dispute": _lines("""
        I was charged twice for the same invoice this month.
        There is a charge on my card that I do not recognise.
        The invoice shows the premium plan but I am on the basic plan.
    """),
    "topic-refund-request": _lines("""
        I would like a refund for my last order.
        The product arrived broken, can I get my money back?
        How long does a refund take to reach my bank account?
    """),
    "topic-account-privacy": _lines("""
        I want to delete my account and all my personal data.
        Who can see my conversation history?
        How do I download a copy of the data you store about me?
    """),
    "topic-app-crash": _lines("""
        The app crashes on startup every single time.
        It shows a blank screen and then crashes.
        The crash started right after the update.
    """),
    "topic-software-install": _lines("""
        The install fails with error 0x80070005.
        I cannot install the software, it says access denied.
        Where do I download the installer for Linux?
    """),
    "topic-network-connectivity": _lines("""
        My Wi-Fi keeps disconnecting every ten minutes.
        The app says there is no internet connection but my browser works.
        The VPN connection drops and I lose all my work.
    """),
    "topic-anxiety-coping": _lines("""
        I get panic attacks before meetings.
        My anxiety is worse in the morning.
        I keep worrying about things that have not happened yet.
    """),
    "topic-grief-support": _lines("""
        My father passed away last month and I still can’t believe it.
        I keep picking up the phone to call my mother, then I remember.
        The grief comes in waves and I never know when.
    """),
    "topic-work-stress": _lines("""
        My manager keeps adding deadlines and I feel burnt out.
        I work late every night and I am exhausted.
        I dread opening my work email on Sunday evenings.
    """),
    "topic-short-story": _lines("""
        I want to write a short story about a robot who learns to paint.
        My story needs a stronger conflict in the second act.
        Can you suggest a title for my short story?
    """),
    "topic-poetry-feedback": _lines("""
        Here is my poem, I would love some feedback on the rhythm.
        Does my poem rhyme too much?
        I wrote a haiku about autumn rain: 秋の雨 falls softly.
    """),
    "topic-python-debugging": _lines("""
        Python says TypeError: 'NoneType' object is not subscriptable.
        My list comprehension gives an IndexError.
        The debugger skips my breakpoint in the loop.
    """),
    "topic-sql-queries": _lines("""
        How do I write a window function to rank orders per customer?
        My GROUP BY query returns the wrong totals.
        Should I use a CTE or a subquery here?
    """),
}

TOPIC_ASSISTANT = {
    "topic-password-reset": _lines("""
        I have sent you a new password reset link, it is valid for 30 minutes.
        Please use the reset link in a private browser window.
    """),
    "topic-billing-dispute": _lines("""
        I can see the duplicate charge, I have refunded the second payment.
        The invoice was generated on the wrong plan, I have corrected it.
    """),
    "topic-refund-request": _lines("""
        Your refund has been approved and will arrive in 5 to 7 business days.
        I have issued a full refund to your original payment method.
    """),
    "topic-account-privacy": _lines("""
        You can request the deletion of your data under Settings, Privacy.
        Only you and our support team, when you ask for help, can see your history.
    """),
    "topic-app-crash": _lines("""
        The crash on startup is fixed in version 4.3, please update.
        Please send the crash report so our engineers can fix it.
    """),
    "topic-software-install": _lines("""
        Error 0x80070005 means the installer lacks permission, run it as administrator.
        The Linux installer is on the downloads page, as a .deb and an .rpm package.
    """),
    "topic-network-connectivity": _lines("""
        Try forgetting the Wi-Fi network and connecting again.
        Please check whether the VPN client is up to date.
    """),
    "topic-anxiety-coping": _lines("""
        Grounding can help: name five things you can see right now.
        Slow breathing, in for four seconds and out for six, calms the body.
    """),
    "topic-grief-support": _lines("""
        I’m so sorry for your loss, grief has no timetable.
        It is normal for grief to come in waves, be patient with yourself.
    """),
    "topic-work-stress": _lines("""
        Burnout is real, setting boundaries on your working hours is a good start.
        Could you talk to your manager about which deadlines matter most?
    """),
    "topic-short-story": _lines("""
        A robot who learns to paint is a charming premise, what does it want most?
        For the title, how about The Colour of Rust?
    """),
    "topic-poetry-feedback": _lines("""
        The rhythm is lovely in the first stanza, the third line breaks it a little.
        Your poem does not need every line to rhyme, slant rhyme can feel fresher.
    """),
    "topic-python-debugging": _lines("""
        That TypeError means a variable is None where you expected a list.
        Print the index before the failing line to find the IndexError.
    """),
    "topic-sql-queries": _lines("""
        Use ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY created_at) to rank orders.
        A CTE makes the query easier to read, and DuckDB optimizes both the same way.
    """),
}

SYSTEM_PROMPTS = (
    "You are a helpful, patient assistant. The user is a {name}; they are {style}.",
    "You are a support agent for a software company. Be concise and friendly."
    " User profile: {name}.",
    "You are an empathetic listener. Never give medical diagnoses. The user is a {name}.",
    "You are an expert assistant. Adapt to the user's communication style: {style}.",
)

EMOTION_OPENERS = {
    "frustration": _lines("""
        I am really frustrated, this is the third time I am asking.
        Honestly this is so annoying, nothing works.
    """),
    "anxiety": _lines("""
        I’m a bit anxious about this, sorry if it is a silly question.
        I am worried I broke something and I am panicking a little.
    """),
    "confusion": _lines("""
        I am confused, I don’t understand how this is supposed to work.
        Sorry, I am lost, the instructions make no sense to me.
    """),
    "sadness": _lines("""
        I feel sad and tired today.
        It has been a really hard week and I feel down.
    """),
    "anger": _lines("""
        This is UNACCEPTABLE, I am really angry.
        I am furious, I want this fixed now.
    """),
    "curiosity": _lines("""
        I am curious about something.
        Quick question, I have always wondered about this.
    """),
    "excitement": _lines("""
        I am so excited, I have been waiting for this! 🎉
        Great news, I finally started, and I love it so far!
    """),
    "skepticism": _lines("""
        I am not sure this will help, but let’s see.
        I doubt a chatbot can fix this, honestly.
    """),
    "overwhelm": _lines("""
        I feel overwhelmed, there is too much to do and I don’t know where to start.
        Everything is piling up and I can’t keep up.
    """),
    "hope": _lines("""
        I hope this is a quick fix.
        Fingers crossed you can help me with this 🤞
    """),
    "neutral": _lines("""
        Hello.
        Hi, I have a question.
    """),
}

EMOTION_CLOSERS = {
    "relief": _lines("""
        That worked, what a relief, thank you so much!
        Phew, it is fixed, thanks a lot.
    """),
    "calm": _lines("""
        I feel calmer now, thank you for listening.
        Okay, I feel better, I can handle this.
    """),
    "clarity": _lines("""
        Now I understand, that makes sense.
        Got it, thank you, it is clear now.
    """),
    "hope": _lines("""
        I feel a bit more hopeful now, thank you.
        Maybe things will get better, thanks for this.
    """),
    "acceptance": _lines("""
        Fine, I understand, I accept that solution.
        Okay, it is not what I wanted but it is fair.
    """),
    "satisfaction": _lines("""
        Great answer, that is exactly what I wanted to know.
        Perfect, thanks, I am happy with that.
    """),
    "disappointment": _lines("""
        That is disappointing, I really hoped it would work.
        Oh well, that is a shame.
    """),
    "trust": _lines("""
        Okay, you were right, I trust your advice now.
        Thanks, that was genuinely helpful, I will come back.
    """),
    "confidence": _lines("""
        I feel confident I can do this now, thank you!
        I have a plan now, I feel much more confident.
    """),
    "frustration": _lines("""
        It still does not work, this is so frustrating.
        I give up, nothing works and I am fed up.
    """),
    "neutral": _lines("""
        Okay, thanks.
        Noted.
    """),
}

# Edge-case templates: user turns that are odd but valid.
EDGE_REPLIES = {
    "tmpl-edge-very-short": _lines("""
        ok
        ??
        no
        yes pls
        hm. nvm
        k thx
    """),
    "tmpl-edge-mixed-language": _lines("""
        Merci beaucoup, ça marche très bien !
        ¿Puedes explicarlo otra vez, por favor?
        Danke schön, das hat geholfen.
        谢谢你的帮助，我明白了。
        ありがとうございます、助かりました。
        Obrigado, não sabia disso.
    """),
    "tmpl-edge-emoji-heavy": _lines("""
        😭😭😭
        omg 🙏 ty
        👍👍
        still broken 😤💀
        lol ok 😂
        ❤️✨ love it
    """),
}

# Sentences with ’ “ ” → é: their mis-decoded forms are the mojibake we inject.
TYPOGRAPHIC = _lines("""
    I don’t know what else to try.
    It says “access denied” every time.
    Go to Settings → Privacy → Delete account.
    We’ll send you the résumé template by email.
    It’s the café’s account, not mine.
    The button labelled “Retry” doesn’t do anything.
    Open File → Export and choose CSV.
    That’s exactly what I needed, merci!
    Here’s the cliché I’m trying to avoid.
""")

UNKNOWN_SLUGS = ("x", "legacy", "deprecated-2023", "imported", "draft")

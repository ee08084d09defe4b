"""Regenerate ``documents.jsonl``: ``python -m orchestrator.corpus.generate``.

The corpus is hand-written data (series, FAQs, policies) expanded into documents: one product
document per sold edition (first volume, latest volume, box sets), one review summary per
series, and the FAQ and policy texts. Output is deterministic (no randomness, sorted keys), so
the committed file only changes when this script does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("documents.jsonl")

# id, English title, Japanese title, author, publisher (English edition), genres, demographic,
# volumes published in English, status, price per volume USD, price per volume JPY, synopsis
SERIES = [
    (
        "one-piece",
        "One Piece",
        "ワンピース",
        "Eiichiro Oda",
        "Viz Media",
        ["adventure", "pirates", "comedy"],
        "shonen",
        107,
        "ongoing",
        9.99,
        528,
        "Monkey D. Luffy sails with the Straw Hat crew in search of the legendary treasure One Piece.",
    ),
    (
        "naruto",
        "Naruto",
        "NARUTO -ナルト-",
        "Masashi Kishimoto",
        "Viz Media",
        ["action", "ninja"],
        "shonen",
        72,
        "complete",
        9.99,
        484,
        "An outcast ninja of the Hidden Leaf Village dreams of becoming Hokage.",
    ),
    (
        "chainsaw-man",
        "Chainsaw Man",
        "チェンソーマン",
        "Tatsuki Fujimoto",
        "Viz Media",
        ["action", "horror"],
        "shonen",
        17,
        "ongoing",
        11.99,
        528,
        "Denji, a broke devil hunter fused with his chainsaw devil Pochita, is recruited by Public Safety.",
    ),
    (
        "jujutsu-kaisen",
        "Jujutsu Kaisen",
        "呪術廻戦",
        "Gege Akutami",
        "Viz Media",
        ["action", "supernatural"],
        "shonen",
        28,
        "complete",
        9.99,
        484,
        "Yuji Itadori swallows a cursed finger and joins Tokyo Jujutsu High to fight curses.",
    ),
    (
        "demon-slayer",
        "Demon Slayer: Kimetsu no Yaiba",
        "鬼滅の刃",
        "Koyoharu Gotouge",
        "Viz Media",
        ["action", "historical", "supernatural"],
        "shonen",
        23,
        "complete",
        9.99,
        484,
        "Tanjiro Kamado becomes a demon slayer to turn his sister Nezuko back into a human.",
    ),
    (
        "spy-family",
        "Spy x Family",
        "SPY×FAMILY",
        "Tatsuya Endo",
        "Viz Media",
        ["comedy", "action", "family"],
        "shonen",
        13,
        "ongoing",
        9.99,
        484,
        "A spy, an assassin and a telepathic girl pretend to be a family, each hiding a secret.",
    ),
    (
        "frieren",
        "Frieren: Beyond Journey's End",
        "葬送のフリーレン",
        "Kanehito Yamada, Tsukasa Abe",
        "Viz Media",
        ["fantasy", "drama", "slice of life"],
        "shonen",
        13,
        "ongoing",
        11.99,
        528,
        "An elf mage who outlives her heroic party sets out to understand the people she travelled with.",
    ),
    (
        "dandadan",
        "Dandadan",
        "ダンダダン",
        "Yukinobu Tatsu",
        "Viz Media",
        ["comedy", "supernatural", "sci-fi"],
        "shonen",
        16,
        "ongoing",
        11.99,
        528,
        "Momo believes in ghosts, Okarun believes in aliens, and both turn out to be right.",
    ),
    (
        "my-hero-academia",
        "My Hero Academia",
        "僕のヒーローアカデミア",
        "Kohei Horikoshi",
        "Viz Media",
        ["action", "superhero"],
        "shonen",
        41,
        "complete",
        9.99,
        484,
        "Izuku Midoriya, born without powers, inherits the greatest Quirk and trains to be a hero.",
    ),
    (
        "attack-on-titan",
        "Attack on Titan",
        "進撃の巨人",
        "Hajime Isayama",
        "Kodansha",
        ["action", "dark fantasy"],
        "shonen",
        34,
        "complete",
        12.99,
        506,
        "Humanity lives behind walls to escape man-eating Titans until the outer wall is breached.",
    ),
    (
        "blue-lock",
        "Blue Lock",
        "ブルーロック",
        "Muneyuki Kaneshiro, Yusuke Nomura",
        "Kodansha",
        ["sports", "soccer"],
        "shonen",
        30,
        "ongoing",
        11.99,
        528,
        "Three hundred strikers compete in a prison-like program to create Japan's best egoist forward.",
    ),
    (
        "tokyo-revengers",
        "Tokyo Revengers",
        "東京卍リベンジャーズ",
        "Ken Wakui",
        "Kodansha",
        ["action", "delinquent", "time travel"],
        "shonen",
        31,
        "complete",
        14.99,
        506,
        "Takemichi travels back twelve years to save his middle-school girlfriend from a gang.",
    ),
    (
        "vinland-saga",
        "Vinland Saga",
        "ヴィンランド・サガ",
        "Makoto Yukimura",
        "Kodansha",
        ["historical", "action", "drama"],
        "seinen",
        14,
        "complete",
        24.99,
        748,
        "Thorfinn grows from a vengeful Viking boy into a man searching for a land without war.",
    ),
    (
        "berserk",
        "Berserk",
        "ベルセルク",
        "Kentaro Miura, Kouji Mori",
        "Dark Horse",
        ["dark fantasy", "action"],
        "seinen",
        42,
        "ongoing",
        14.99,
        660,
        "Guts, the Black Swordsman, hunts the demonic God Hand after the betrayal of the Eclipse.",
    ),
    (
        "vagabond",
        "Vagabond",
        "バガボンド",
        "Takehiko Inoue",
        "Viz Media",
        ["historical", "martial arts"],
        "seinen",
        37,
        "on hiatus",
        19.99,
        660,
        "A retelling of the life of swordsman Miyamoto Musashi after the battle of Sekigahara.",
    ),
    (
        "monster",
        "Monster",
        "MONSTER",
        "Naoki Urasawa",
        "Viz Media",
        ["thriller", "mystery"],
        "seinen",
        9,
        "complete",
        22.99,
        1100,
        "Dr. Kenzo Tenma saves a boy's life and later learns the boy became a killer.",
    ),
    (
        "yotsuba",
        "Yotsuba&!",
        "よつばと！",
        "Kiyohiko Azuma",
        "Yen Press",
        ["comedy", "slice of life"],
        "seinen",
        15,
        "ongoing",
        15.00,
        748,
        "Five-year-old Yotsuba discovers everyday wonders with her adoptive father.",
    ),
    (
        "kaguya-sama",
        "Kaguya-sama: Love Is War",
        "かぐや様は告らせたい",
        "Aka Akasaka",
        "Viz Media",
        ["romantic comedy", "school"],
        "seinen",
        28,
        "complete",
        9.99,
        572,
        "Two student council geniuses scheme to make the other confess their love first.",
    ),
    (
        "oshi-no-ko",
        "Oshi no Ko",
        "【推しの子】",
        "Aka Akasaka, Mengo Yokoyari",
        "Yen Press",
        ["drama", "idol", "mystery"],
        "seinen",
        16,
        "complete",
        13.00,
        693,
        "Reborn as the children of their favourite idol, twins chase the truth about her murder.",
    ),
    (
        "kingdom",
        "Kingdom",
        "キングダム",
        "Yasuhisa Hara",
        "Shueisha (Japanese edition only)",
        ["historical", "war"],
        "seinen",
        0,
        "ongoing",
        0.0,
        594,
        "War orphan Shin fights to become the greatest general under the heavens in the Warring States.",
    ),
    (
        "golden-kamuy",
        "Golden Kamuy",
        "ゴールデンカムイ",
        "Satoru Noda",
        "Viz Media",
        ["historical", "adventure"],
        "seinen",
        31,
        "complete",
        12.99,
        594,
        "A war veteran and an Ainu girl hunt for hidden Ainu gold in Hokkaido.",
    ),
    (
        "dungeon-meshi",
        "Delicious in Dungeon",
        "ダンジョン飯",
        "Ryoko Kui",
        "Yen Press",
        ["fantasy", "cooking"],
        "seinen",
        14,
        "complete",
        15.00,
        748,
        "Adventurers cook and eat the monsters of a dungeon while racing to rescue a friend.",
    ),
    (
        "mushishi",
        "Mushishi",
        "蟲師",
        "Yuki Urushibara",
        "Kodansha",
        ["supernatural", "slice of life"],
        "seinen",
        5,
        "complete",
        34.99,
        660,
        "Ginko wanders rural Japan studying mushi, primitive life forms of the spirit world.",
    ),
    (
        "pluto",
        "Pluto",
        "PLUTO",
        "Naoki Urasawa, Osamu Tezuka",
        "Viz Media",
        ["sci-fi", "mystery"],
        "seinen",
        8,
        "complete",
        12.99,
        1100,
        "A robot detective investigates the murders of the world's seven great robots.",
    ),
    (
        "fruits-basket",
        "Fruits Basket",
        "フルーツバスケット",
        "Natsuki Takaya",
        "Yen Press",
        ["romance", "drama", "supernatural"],
        "shojo",
        12,
        "complete",
        20.00,
        1210,
        "Tohru Honda discovers that the Sohma family turns into zodiac animals when hugged.",
    ),
    (
        "sailor-moon",
        "Sailor Moon",
        "美少女戦士セーラームーン",
        "Naoko Takeuchi",
        "Kodansha",
        ["magical girl", "romance"],
        "shojo",
        12,
        "complete",
        14.99,
        748,
        "Usagi Tsukino awakens as Sailor Moon and gathers the Sailor Guardians to protect the Earth.",
    ),
    (
        "nana",
        "Nana",
        "NANA -ナナ-",
        "Ai Yazawa",
        "Viz Media",
        ["romance", "music", "drama"],
        "josei",
        21,
        "on hiatus",
        9.99,
        462,
        "Two women named Nana meet on a train to Tokyo and end up sharing an apartment.",
    ),
    (
        "skip-beat",
        "Skip Beat!",
        "スキップ・ビート！",
        "Yoshiki Nakamura",
        "Viz Media",
        ["romantic comedy", "showbiz"],
        "shojo",
        49,
        "ongoing",
        9.99,
        484,
        "Kyoko enters show business to get revenge on the pop idol who used her.",
    ),
    (
        "witch-hat-atelier",
        "Witch Hat Atelier",
        "とんがり帽子のアトリエ",
        "Kamome Shirahama",
        "Kodansha",
        ["fantasy", "magic"],
        "seinen",
        13,
        "ongoing",
        12.99,
        759,
        "Coco learns that magic is drawn, not born, and becomes the apprentice of the witch Qifrey.",
    ),
    (
        "haikyu",
        "Haikyu!!",
        "ハイキュー!!",
        "Haruichi Furudate",
        "Viz Media",
        ["sports", "volleyball"],
        "shonen",
        45,
        "complete",
        9.99,
        484,
        "Short but determined Shoyo Hinata joins Karasuno High's volleyball team.",
    ),
    (
        "slam-dunk",
        "Slam Dunk",
        "SLAM DUNK",
        "Takehiko Inoue",
        "Viz Media",
        ["sports", "basketball"],
        "shonen",
        31,
        "complete",
        9.99,
        484,
        "Delinquent Hanamichi Sakuragi joins the basketball team to impress a girl.",
    ),
    (
        "death-note",
        "Death Note",
        "DEATH NOTE",
        "Tsugumi Ohba, Takeshi Obata",
        "Viz Media",
        ["thriller", "supernatural"],
        "shonen",
        12,
        "complete",
        9.99,
        462,
        "Light Yagami finds a notebook that kills anyone whose name is written in it.",
    ),
    (
        "fullmetal-alchemist",
        "Fullmetal Alchemist",
        "鋼の錬金術師",
        "Hiromu Arakawa",
        "Viz Media",
        ["fantasy", "adventure", "action"],
        "shonen",
        27,
        "complete",
        9.99,
        462,
        "The Elric brothers search for the Philosopher's Stone after a failed attempt to revive their mother.",
    ),
    (
        "dragon-ball",
        "Dragon Ball",
        "ドラゴンボール",
        "Akira Toriyama",
        "Viz Media",
        ["action", "martial arts"],
        "shonen",
        42,
        "complete",
        9.99,
        460,
        "Goku, a boy with a monkey tail, searches for the seven Dragon Balls.",
    ),
    (
        "hunter-x-hunter",
        "Hunter x Hunter",
        "HUNTER×HUNTER",
        "Yoshihiro Togashi",
        "Viz Media",
        ["adventure", "action"],
        "shonen",
        38,
        "on hiatus",
        9.99,
        484,
        "Gon Freecss takes the Hunter Exam to find his father, a legendary Hunter.",
    ),
    (
        "sakamoto-days",
        "Sakamoto Days",
        "SAKAMOTO DAYS",
        "Yuto Suzuki",
        "Viz Media",
        ["action", "comedy"],
        "shonen",
        17,
        "ongoing",
        9.99,
        484,
        "The world's greatest hitman retired to run a convenience store, but his past keeps visiting.",
    ),
    (
        "kaiju-no-8",
        "Kaiju No. 8",
        "怪獣8号",
        "Naoya Matsumoto",
        "Viz Media",
        ["action", "sci-fi", "kaiju"],
        "shonen",
        13,
        "ongoing",
        9.99,
        528,
        "Kafka Hibino, a kaiju cleaner, gains the power to turn into a kaiju himself.",
    ),
    (
        "blue-period",
        "Blue Period",
        "ブルーピリオド",
        "Tsubasa Yamaguchi",
        "Kodansha",
        ["drama", "art", "school"],
        "seinen",
        15,
        "ongoing",
        12.99,
        748,
        "A popular but bored high-school student discovers painting and aims for Tokyo University of the Arts.",
    ),
    (
        "made-in-abyss",
        "Made in Abyss",
        "メイドインアビス",
        "Akihito Tsukushi",
        "Seven Seas",
        ["adventure", "dark fantasy"],
        "seinen",
        12,
        "ongoing",
        13.99,
        990,
        "Riko descends into the Abyss with a robot boy to find her mother, a legendary Cave Raider.",
    ),
    (
        "akira",
        "Akira",
        "AKIRA",
        "Katsuhiro Otomo",
        "Kodansha",
        ["sci-fi", "cyberpunk"],
        "seinen",
        6,
        "complete",
        34.99,
        1980,
        "In Neo-Tokyo, biker Kaneda tries to stop his friend Tetsuo, whose psychic powers awaken.",
    ),
    (
        "the-apothecary-diaries",
        "The Apothecary Diaries",
        "薬屋のひとりごと",
        "Natsu Hyuuga, Nekokurage",
        "Square Enix Manga",
        ["mystery", "historical", "drama"],
        "seinen",
        13,
        "ongoing",
        12.99,
        726,
        "Maomao, a palace servant with an apothecary's knowledge, solves mysteries in the imperial court.",
    ),
    (
        "yona",
        "Yona of the Dawn",
        "暁のヨナ",
        "Mizuho Kusanagi",
        "Viz Media",
        ["fantasy", "adventure", "romance"],
        "shojo",
        42,
        "complete",
        9.99,
        484,
        "A sheltered princess flees her castle and gathers the four dragon warriors.",
    ),
]

# Editions beyond single volumes: series id -> (edition name, volumes in the set, price USD, price JPY)
BOX_SETS = {
    "one-piece": ("One Piece Box Set 1: East Blue and Baroque Works", "volumes 1-23", 179.99, 0),
    "naruto": ("Naruto Box Set 1", "volumes 1-27", 189.99, 0),
    "demon-slayer": ("Demon Slayer Complete Box Set", "volumes 1-23", 229.99, 0),
    "chainsaw-man": ("Chainsaw Man Box Set", "volumes 1-11", 124.99, 0),
    "attack-on-titan": ("Attack on Titan The Final Season Part 1 Manga Box Set", "volumes 29-34", 79.99, 0),
    "berserk": ("Berserk Deluxe Edition Volume 1", "hardcover omnibus of volumes 1-3", 49.99, 0),
    "vinland-saga": ("Vinland Saga Deluxe 1", "hardcover of volumes 1-3", 39.99, 0),
    "vagabond": ("Vagabond VIZBIG Edition Volume 1", "omnibus of volumes 1-3", 24.99, 0),
    "fullmetal-alchemist": ("Fullmetal Alchemist Complete Box Set", "volumes 1-27", 249.99, 0),
    "death-note": ("Death Note Complete Box Set", "volumes 1-13 with How to Read", 99.99, 0),
    "frieren": ("Frieren Beyond Journey's End Hardcover Collector's Edition", "volumes 1-2", 39.99, 0),
    "jujutsu-kaisen": ("Jujutsu Kaisen Box Set 1", "volumes 1-14 with Jujutsu Kaisen 0", 149.99, 0),
    "akira": ("Akira 35th Anniversary Box Set", "volumes 1-6 hardcover", 249.99, 0),
    "haikyu": ("Haikyu!! Complete Box Set", "volumes 1-45", 399.99, 0),
    "kingdom": ("キングダム 1-70巻セット", "Japanese edition, volumes 1-70", 0.0, 41580),
    "one-piece-ja": ("ワンピース 1-107巻 全巻セット", "Japanese edition, volumes 1-107", 0.0, 56496),
    "frieren-ja": ("葬送のフリーレン 特装版 13巻", "Japanese special edition with acrylic stand", 0.0, 1980),
}

REVIEW_NOTES = {
    "shonen": "Readers praise the fast pacing and fights; some find the middle arcs long.",
    "seinen": "Reviewers highlight the mature storytelling and detailed art; better for older teens and adults.",
    "shojo": "Readers love the character relationships and emotional payoffs.",
    "josei": "Praised for realistic adult relationships; note that the series is on hiatus.",
}
AGE_RATINGS = {"shonen": "Teen (13+)", "seinen": "Older Teen (16+)", "shojo": "Teen (13+)", "josei": "Older Teen (16+)"}

FAQS = [
    (
        "Do you ship manga internationally?",
        "Yes. We ship to the United States, Canada, the United Kingdom, the EU, "
        "Australia and Japan. International orders take 7-14 business days and duties are paid by the recipient.",
    ),
    (
        "Do you ship to Canada?",
        "Yes. Standard shipping to Canada takes 7-10 business days and costs $14.99; "
        "orders over $120 ship to Canada for $4.99.",
    ),
    (
        "How much is shipping in the US?",
        "Standard shipping within the US is $4.99 and free on orders over $35. "
        "Expedited shipping (2-3 business days) is $9.99.",
    ),
    (
        "How long does standard shipping take?",
        "Standard shipping within the US takes 3-5 business days after the "
        "order ships. Orders placed before 2 pm Eastern ship the same business day.",
    ),
    (
        "Can I track my order?",
        "Yes. When your order ships we email a tracking link. You can also open Your Orders "
        "and select Track package. Tracking updates can take up to 24 hours to appear.",
    ),
    (
        "My order says delivered but I cannot find it.",
        "Check around your door and with neighbours, then wait 48 "
        "hours because carriers sometimes mark parcels delivered early. If it is still missing, contact support "
        "from Your Orders and we will send a replacement or a refund.",
    ),
    (
        "Is there a preorder bonus for new volumes?",
        "Some Japanese editions include a preorder bonus such as an "
        "illustration card or shikishi board while supplies last. English editions usually have no preorder bonus; "
        "the product page lists any bonus.",
    ),
    (
        "When will a preordered volume be charged?",
        "Preorders are charged when the item ships, not when you place "
        "the preorder. If the price drops before release you pay the lowest price.",
    ),
    (
        "Can I cancel a preorder?",
        "Yes. You can cancel a preorder at any time before it ships from Your Orders at no charge.",
    ),
    (
        "Do you sell Japanese-language editions?",
        "Yes. Products marked Japanese edition are imported tankobon "
        "printed in Japanese, read right to left, and priced in yen at checkout conversion.",
    ),
    (
        "What is the difference between a tankobon and a deluxe edition?",
        "A tankobon is the standard paperback "
        "volume. Deluxe and omnibus editions collect two or three volumes in a larger format, often hardcover with "
        "colour pages.",
    ),
    (
        "Are your box sets complete series?",
        "Box sets list the volumes they contain on the product page. A complete "
        "box set holds every volume of the series; numbered box sets cover one part of a longer series.",
    ),
    (
        "Which payment methods do you accept?",
        "We accept Visa, Mastercard, American Express, JCB, PayPal, Apple Pay "
        "and gift cards. Japanese konbini payment is available for orders shipped to Japan.",
    ),
    (
        "Do you offer gift wrapping?",
        "Gift wrapping is available for $3.99 per item and includes a printed message "
        "card. Box sets are wrapped in kraft paper.",
    ),
    (
        "How do I change my shipping address?",
        "You can change the address from Your Orders until the order ships. "
        "After it ships, contact the carrier with the tracking number to request a redirect.",
    ),
    ("Do you price match?", "We do not price match other stores, but preorders get our lowest price before release."),
    (
        "Are prices shown in yen or dollars?",
        "Prices are shown in US dollars for English editions and in yen for "
        "Japanese editions; the checkout shows the converted total in your currency.",
    ),
    ("Do you have digital manga?", "No. MangaAssist sells printed manga, art books and box sets only."),
    (
        "How do I know the reading age of a series?",
        "Every product page shows the publisher's age rating, for "
        "example Teen (13+) or Older Teen (16+). Seinen titles are usually rated Older Teen or Mature.",
    ),
    (
        "Can I buy a single volume of a box set?",
        "Yes. Individual volumes are sold separately; search for the series and the volume number.",
    ),
    (
        "What happens if a volume is out of stock?",
        "Out-of-stock volumes show Notify me. We email you when the "
        "publisher restocks; reprints usually take 4-8 weeks.",
    ),
    ("Do you ship to PO boxes?", "Yes, standard shipping can go to PO boxes in the US. Expedited shipping cannot."),
    (
        "Is there a student discount?",
        "Students get 10% off with a verified student account, excluding box sets and preorders.",
    ),
    (
        "What is Prime shipping for manga?",
        "Prime members get free two-day shipping on eligible manga and free "
        "release-day delivery on eligible preorders in the US.",
    ),
    (
        "How are manga packaged?",
        "Manga ship in padded boxes with corner protection. Box sets ship in an extra outer carton.",
    ),
    (
        "Can I order a signed copy?",
        "Signed copies are sold only when the product page says so; they are limited and cannot be reserved.",
    ),
    (
        "Do you sell light novels?",
        "Yes. Light novels are listed under Books > Light Novels and follow the same "
        "shipping and return rules as manga.",
    ),
    (
        "Why was my order split into several packages?",
        "Preorders and items from different warehouses ship separately at no extra shipping cost.",
    ),
    (
        "How do I contact customer support?",
        "Open Help > Contact us for chat or email. Support is available 24 "
        "hours a day in English and from 9:00 to 18:00 JST in Japanese.",
    ),
    (
        "送料はいくらですか？",
        "日本国内の送料は全国一律550円で、3,500円以上のご注文は送料無料です。お急ぎ便は別途440円かかります。",
    ),
    (
        "予約商品の特典はありますか？",
        "一部の日本語版には、数量限定でイラストカードや色紙などの予約特典が付きます。"
        "特典の有無は商品ページに記載しています。",
    ),
    (
        "注文した商品はいつ届きますか？",
        "通常、発送から1〜3日でお届けします。発送後にお送りする追跡番号で配送状況を確認できます。",
    ),
    (
        "海外発送はできますか？",
        "はい。アメリカ、カナダ、イギリス、EU、オーストラリアへ発送しています。"
        "海外発送は7〜14営業日かかり、関税はお客様のご負担です。",
    ),
    (
        "支払い方法は何がありますか？",
        "クレジットカード（Visa、Mastercard、JCB、American Express）、"
        "PayPal、コンビニ払い、ギフトカードがご利用いただけます。",
    ),
    ("予約注文をキャンセルできますか？", "発送前であれば、注文履歴からいつでも無料でキャンセルできます。"),
    ("全巻セットはありますか？", "人気シリーズの全巻セットを販売しています。商品ページに収録巻数を記載しています。"),
]

POLICIES = [
    (
        "Return window",
        "returns",
        "You can return unopened manga, box sets and art books within 30 days of "
        "delivery for a full refund. Opened items can be returned within 30 days if they are in like-new condition.",
    ),
    (
        "Damaged or defective items",
        "returns",
        "If a volume arrives damaged, bent or with misprinted pages, report "
        "it within 30 days from Your Orders with a photo. We send a free replacement or a full refund, and you do "
        "not need to return the damaged item.",
    ),
    (
        "Return shipping costs",
        "returns",
        "Return shipping is free for damaged, defective or incorrect items. For "
        "other returns a $4.99 return shipping fee is deducted from the refund.",
    ),
    (
        "Refund timing",
        "returns",
        "Refunds are issued to the original payment method within 3-5 business days after "
        "we receive the return. Gift card purchases are refunded as gift card balance.",
    ),
    (
        "Box set returns",
        "returns",
        "Box sets must be returned complete with every volume and the outer box. "
        "Partial box set returns are refunded pro rata only when a volume is damaged.",
    ),
    (
        "Preorder returns",
        "returns",
        "Preordered items follow the standard 30-day return window starting on the "
        "delivery date. Preorder bonuses must be returned with the item.",
    ),
    (
        "Non-returnable items",
        "returns",
        "Signed copies, opened blind-box merchandise and gift cards cannot be returned unless they arrive damaged.",
    ),
    (
        "Exchanges",
        "returns",
        "We do not exchange items directly. Return the item for a refund and place a new "
        "order for the edition you want.",
    ),
    (
        "Shipping policy",
        "shipping",
        "Orders placed before 2 pm Eastern on a business day ship the same day. "
        "Standard US delivery takes 3-5 business days; expedited takes 2-3 business days.",
    ),
    (
        "Free shipping threshold",
        "shipping",
        "US orders over $35 ship free with standard shipping. Japanese domestic orders over 3,500 yen ship free.",
    ),
    (
        "International shipping policy",
        "shipping",
        "International orders ship with tracking and take 7-14 business "
        "days. Import duties and taxes are collected by the carrier on delivery.",
    ),
    (
        "Order tracking policy",
        "shipping",
        "Every shipment has a tracking number, emailed when the order ships and "
        "shown in Your Orders. If tracking has not updated for 5 business days, contact support and we will open "
        "a carrier investigation.",
    ),
    (
        "Late delivery",
        "shipping",
        "If a package is more than 5 business days past its estimated delivery date, we "
        "will send a replacement or refund the order at your choice.",
    ),
    (
        "Preorder policy",
        "preorder",
        "Preorders are charged when they ship. If the publisher delays a release, we "
        "email the new date and you can cancel at no charge. You always pay the lowest price offered between "
        "preorder and release.",
    ),
    (
        "Release-day delivery",
        "preorder",
        "Eligible English-edition preorders arrive on release day in the US when "
        "shipped with Prime or expedited shipping.",
    ),
    (
        "Preorder bonus policy",
        "preorder",
        "Preorder bonuses are limited and given in order of purchase while "
        "supplies last; a cancelled preorder releases its bonus to the next customer.",
    ),
    (
        "Price and currency policy",
        "pricing",
        "English editions are priced in US dollars and Japanese editions in "
        "yen. Card issuers may add a foreign transaction fee for yen prices.",
    ),
    (
        "Age rating policy",
        "catalog",
        "Product pages show the publisher's age rating. Titles rated Mature are only "
        "sold to signed-in customers aged 18 or older.",
    ),
    (
        "Privacy in chat",
        "privacy",
        "The assistant never asks for passwords or full card numbers. Do not share "
        "payment details in chat; order questions are answered from Your Orders.",
    ),
    (
        "返品ポリシー",
        "returns",
        "未開封の商品はお届けから30日以内であれば返品できます。破損や落丁がある場合は、"
        "写真を添えて30日以内にご連絡ください。無料で交換または返金いたします。",
    ),
    (
        "配送ポリシー",
        "shipping",
        "平日14時までのご注文は当日発送します。国内配送は発送から1〜3日、3,500円以上のご注文は送料無料です。",
    ),
    (
        "予約ポリシー",
        "preorder",
        "予約商品は発送時に決済されます。発売日が延期された場合はメールでお知らせし、無料でキャンセルできます。",
    ),
]


def _product_docs(series: tuple[Any, ...]) -> list[dict[str, Any]]:
    sid, title, title_ja, author, publisher, genres, demo, volumes, status, usd, jpy, synopsis = series
    docs = []
    rating = AGE_RATINGS[demo]
    base = {"series_id": sid, "series": title, "author": author, "genres": genres, "demographic": demo}
    if volumes:
        for vol in sorted({1, volumes // 2 if volumes >= 10 else 1, volumes}):
            fmt = "English edition paperback"
            docs.append(
                {
                    **base,
                    "doc_id": f"product_{sid}_v{vol:03d}",
                    "source_type": "product_description",
                    "lang": "en",
                    "title": f"{title}, Vol. {vol}",
                    "price_usd": usd,
                    "text": (
                        f"{title}, Vol. {vol} ({title_ja}) by {author}. {fmt} published by {publisher}. "
                        f"Price ${usd:.2f}. {synopsis} Genres: {', '.join(genres)}. {demo.title()} manga, "
                        f"rated {rating}. Series status: {status}, {volumes} volumes in English so far."
                        + (
                            " This is the latest volume in English."
                            if vol == volumes and vol > 1
                            else " A good starting point for new readers."
                            if vol == 1
                            else ""
                        )
                    ),
                }
            )
    docs.append(
        {
            **base,
            "doc_id": f"product_{sid}_ja_v001",
            "source_type": "product_description",
            "lang": "ja",
            "title": f"{title_ja} 1巻",
            "price_jpy": jpy,
            "text": (
                f"{title_ja} 1巻（{title}, Japanese edition）。著者: {author}。価格 {jpy:,}円（税込）。"
                f"日本語版の単行本です。{synopsis}"
            ),
        }
    )
    for key in (sid, f"{sid}-ja"):
        if key in BOX_SETS:
            name, contents, box_usd, box_jpy = BOX_SETS[key]
            price = f"Price ${box_usd:.2f}." if box_usd else f"価格 {box_jpy:,}円（税込）。"
            docs.append(
                {
                    **base,
                    "doc_id": f"product_{key.replace('-ja', '')}_{'ja_' if box_jpy else ''}set",
                    "source_type": "product_description",
                    "lang": "ja" if box_jpy else "en",
                    "title": name,
                    **({"price_usd": box_usd} if box_usd else {"price_jpy": box_jpy}),
                    "text": f"{name} by {author}: {contents}. {price} {synopsis}",
                }
            )
    return docs


def build() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for series in SERIES:
        docs.extend(_product_docs(series))
        sid, title, title_ja, author, _pub, genres, demo, volumes, status, *_rest, _synopsis = series
        similar = [s[1] for s in SERIES if s[0] != sid and set(s[5]) & set(genres) and s[6] == demo][:3]
        docs.append(
            {
                "doc_id": f"review_{sid}",
                "source_type": "review_summary",
                "lang": "en",
                "series_id": sid,
                "series": title,
                "genres": genres,
                "demographic": demo,
                "title": f"{title}: what readers say",
                "text": (
                    f"Reader reviews of {title} ({title_ja}) by {author}. {REVIEW_NOTES[demo]} "
                    f"Recommended for fans of {', '.join(genres)}. Readers who liked {title} also "
                    f"enjoyed {', '.join(similar) or 'other ' + demo + ' titles'}. Status: {status}"
                    + (f", {volumes} volumes in English." if volumes else ", Japanese edition only.")
                ),
            }
        )
    for i, (question, answer) in enumerate(FAQS, 1):
        lang = "ja" if any(ord(c) > 0x3000 for c in question) else "en"
        docs.append(
            {
                "doc_id": f"faq_{i:03d}",
                "source_type": "faq",
                "lang": lang,
                "title": question,
                "text": f"Q: {question} A: {answer}",
            }
        )
    for i, (title, topic, text) in enumerate(POLICIES, 1):
        lang = "ja" if any(ord(c) > 0x3000 for c in title) else "en"
        docs.append(
            {
                "doc_id": f"policy_{i:03d}",
                "source_type": "policy",
                "lang": lang,
                "topic": topic,
                "title": title,
                "text": f"{title}. {text}",
            }
        )
    return docs


def main() -> None:
    docs = build()
    ids = [d["doc_id"] for d in docs]
    assert len(ids) == len(set(ids)), "duplicate doc ids"
    OUT.write_text("".join(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n" for d in docs), encoding="utf-8")
    print(f"wrote {len(docs)} documents to {OUT}")


if __name__ == "__main__":
    main()
